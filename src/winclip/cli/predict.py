"""`winclip predict`: inspect photos: a composite, an overlay, a mask and a label per photo, plus results.csv.

Inspect photos with a profile (winclip profile create) or an object name. Writes per photo a composite to
look at (composites/: photo | heat | mask with the label, score, threshold and a colour bar) and, at the
photo's own size, an overlay (colour scale fixed at the threshold: yellow = threshold) and a 0/255 mask,
plus results.csv, results.jsonl and errors.csv. Exit status: 0 all fine, 1 some photos failed, 2 usage error
(or a symbolic link in --out: nothing is written through one), 3 the results could not be written (disk full,
no permission: finished results are kept; rerun with --resume), 130 interrupted (rerun with --resume).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..images import DEFAULT_MAX_PIXELS
from ..options import RESIZE_MODES, MethodOptions
from .common import (
    EXIT_FAILED,
    MAX_COUNT,
    REVIEW,
    THRESHOLD,
    add_command,
    add_model_options,
    add_ray_options,
    add_runtime_options,
    count,
    image_paths,
    interrupted,
    load_model,
    number,
    print_banner,
    unwritable,
)
from .requests import MAX_MEGAPIXELS, MEGA, PredictRequest


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `predict` subcommand."""
    p = add_command(subparsers, "predict", __doc__)
    p.add_argument("inputs", nargs="+", metavar="IMAGE", help="photos: files, folders (recursed, mirrored), globs")
    p.add_argument("--out", required=True, help="output folder")
    src = p.add_argument_group("what a good part looks like (a profile, or an object name)")
    how = src.add_mutually_exclusive_group(required=True)
    how.add_argument("--profile", help="profile folder from `winclip profile create`")
    how.add_argument("--object", help="object name, for a quick run without a profile")
    src.add_argument("--good", nargs="*", default=[], metavar="IMAGE", help="with --object: good reference photos")
    src.add_argument("--roi", metavar="MASK", help="with --object: region-of-interest mask (nonzero = inspect)")
    src.add_argument("--resize", default="squash", choices=RESIZE_MODES, help="with --object: non-square photos")
    src.add_argument("--threshold", type=THRESHOLD, help="decision threshold (default: the profile's; 0.5 without one)")
    src.add_argument("--review-threshold", type=REVIEW, help="lower threshold of a 'review' band")
    out = p.add_argument_group("output")
    out.add_argument(
        "--save-maps", action="store_true", help="also write the float32 maps as TIFF (maps/, MVTec layout)"
    )
    out.add_argument(
        "--min-area", type=count(0, MAX_COUNT), default=0, help="drop regions smaller than this many pixels"
    )
    out.add_argument(
        "--max-megapixels",
        type=number(0, MAX_MEGAPIXELS),
        default=DEFAULT_MAX_PIXELS / MEGA,
        help="photos larger than this (decoded) get an error row instead of being decoded",
    )
    out.add_argument("--overwrite", action="store_true", help="replace earlier results in --out")
    out.add_argument("--resume", action="store_true", help="keep finished results in --out and do the rest")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_options(p, profile_defaults=True)
    add_runtime_options(p)
    add_ray_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """`winclip predict`: the request, then a local run or one on Ray."""
    return predict(PredictRequest.of(args))


def predict(request: PredictRequest) -> int:
    """Check the inputs and outputs, build the inspector, print the banner, stream the photos; 1 when any failed."""
    from ..inspection.folder_run import check_output, run_predict
    from ..inspection.inputs import check_out_not_inside, discover
    from ..inspection.inspector import Inspector
    from ..inspection.profile import Profile

    out = Path(request.out)
    check_out_not_inside(out, list(request.inputs))
    found = discover(list(request.inputs))
    if not found.images:
        raise ValueError(f"no images found in {' '.join(request.inputs)}")
    check_output(out, overwrite=request.overwrite, resume=request.resume)  # before loading any model
    if request.ray is not None:
        from .cluster import predict_on_ray

        return predict_on_ray(request, request.ray, found)
    if request.profile:  # thresholds first: evidence measured at other thresholds does not choose the path
        profile = request.thresholds_on(Profile.load(request.profile))
        model = load_model(request.model, profile.options, profile=profile, by_evidence=True)
    else:
        good = image_paths(request.good, "--good", refuse_outputs=True)
        if request.roi:
            image_paths([request.roi], "--roi")
        model = load_model(request.model, MethodOptions(resize=request.resize))
        assert request.object is not None  # the parser asks for --profile or --object
        profile = request.thresholds_on(Profile.create(model, request.object, good, roi=request.roi))
    inspector = Inspector(profile, model, min_area=request.min_area)
    print_banner(request, profile, found)
    try:
        summary = run_predict(
            inspector,
            found.images,
            request.out,
            profile_path=request.profile,
            save_maps=request.save_maps,
            overwrite=request.overwrite,
            resume=request.resume,
            max_pixels=request.max_pixels,
            progress=request.progress,
        )
    except OSError as exc:  # writing: the inputs' errors are rows, never exceptions
        return unwritable(request.out, exc)
    except KeyboardInterrupt:
        return interrupted(request.out)
    print(f"predict: {summary.text()}", file=sys.stderr)
    return EXIT_FAILED if summary.failed or found.unmatched else 0
