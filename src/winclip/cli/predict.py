"""`winclip predict`: inspect photos: an overlay, a mask and a label per photo, plus results.csv / results.jsonl.

Inspect photos with a profile (winclip profile create) or an object name. Writes per photo, at its own size,
an overlay (colour scale fixed at the threshold: yellow = threshold) and a 0/255 mask, plus results.csv,
results.jsonl and errors.csv. Exit status: 0 all fine, 1 some photos failed, 2 usage error, 3 the results
could not be written (disk full, no permission: finished results are kept; rerun with --resume), 130
interrupted (rerun with --resume).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..images import DEFAULT_MAX_PIXELS
from ..options import RESIZE_MODES, MethodOptions
from . import add_command, add_runtime_options, load_model
from .cluster import add_ray_options
from .profile import add_profile_model_options, default_weights, image_paths, model_for_profile


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
    src.add_argument("--threshold", type=float, help="decision threshold (default: the profile's; 0.5 without one)")
    src.add_argument("--review-threshold", type=float, help="lower threshold of a 'review' band")
    out = p.add_argument_group("output")
    out.add_argument(
        "--save-maps", action="store_true", help="also write the float32 maps as TIFF (maps/, MVTec layout)"
    )
    out.add_argument("--min-area", type=int, default=0, help="drop regions smaller than this many pixels")
    out.add_argument(
        "--max-megapixels",
        type=float,
        default=DEFAULT_MAX_PIXELS / MEGA,
        help="photos larger than this (decoded) get an error row instead of being decoded",
    )
    out.add_argument("--overwrite", action="store_true", help="replace earlier results in --out")
    out.add_argument("--resume", action="store_true", help="keep finished results in --out and do the rest")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_profile_model_options(p)
    add_runtime_options(p)
    add_ray_options(p)
    p.set_defaults(func=run)


MEGA = 1_000_000
EXIT_UNWRITABLE = 3


def profile_label(profile, profile_path: str | None) -> str:
    """How the banner names the decision rule."""
    if profile_path is None:
        return (
            f"no profile: object {profile.object_name!r}, {profile.shots} reference(s), threshold {profile.threshold:g}"
        )
    cal = "calibrated" if profile.calibration is not None else "NOT calibrated"
    return (
        f"profile {profile_path} ({cal}): object {profile.object_name!r}, {profile.shots} reference(s), "
        f"threshold {profile.threshold:.6g}"
    )


def with_threshold_options(profile, args: argparse.Namespace):
    """The profile with --threshold/--review-threshold over its own; its review band stays while below the threshold."""
    if args.threshold is None and args.review_threshold is None:
        return profile
    threshold = profile.threshold if args.threshold is None else args.threshold
    review = args.review_threshold
    if review is None and profile.review_threshold is not None and profile.review_threshold <= threshold:
        review = profile.review_threshold
    return profile.with_thresholds(threshold, review)


def print_banner(args: argparse.Namespace, profile, found, where: str = "") -> None:
    """The decision rule, a warning for an uncalibrated default threshold, the job and unmatched patterns."""
    print(f"predict: {profile_label(profile, args.profile)}", file=sys.stderr)
    if args.profile is None and args.threshold is None:
        print(
            "predict: threshold 0.5 is a default, not calibrated; pass --threshold or use a calibrated profile",
            file=sys.stderr,
        )
    print(f"predict: {len(found.images)} images -> {args.out}{where}", file=sys.stderr)
    for pattern in found.unmatched:
        print(f"winclip: {pattern}: no file matches", file=sys.stderr)


def interrupted(out: str) -> int:
    """One line for Ctrl-C: what is kept and how to go on; exit status 130."""
    print(f"winclip: interrupted; finished results are in {out}; rerun with --resume to continue", file=sys.stderr)
    return 130


def unwritable(out: str, exc: OSError) -> int:
    """One line for results that cannot be written (a full disk, a read-only folder); exit status 3."""
    print(
        f"winclip: error: cannot write the results in {out}: {exc.strerror or exc} "
        f"({exc.filename or out}); finished results are kept: fix it and rerun with --resume",
        file=sys.stderr,
    )
    return EXIT_UNWRITABLE


def run(args: argparse.Namespace) -> int:
    """Build the inspector, print the banner, stream the photos; 1 when any photo failed."""
    from ..inspection.folder_run import check_out_not_inside, check_output, discover, run_predict
    from ..inspection.inspector import Inspector
    from ..inspection.profile import Profile

    if args.object is None and (args.good or args.roi):
        raise ValueError("--good and --roi go with --object; a profile already holds its references and ROI")
    if args.max_megapixels <= 0:
        raise ValueError(f"--max-megapixels must be > 0, got {args.max_megapixels}")
    check_out_not_inside(Path(args.out), args.inputs)
    found = discover(args.inputs)
    if not found.images:
        raise ValueError(f"no images found in {' '.join(args.inputs)}")
    check_output(Path(args.out), overwrite=args.overwrite, resume=args.resume)  # before loading any model
    if args.ray:
        from .cluster import predict_on_ray

        return predict_on_ray(args, found)
    if args.profile:
        profile = Profile.load(args.profile)
        model = model_for_profile(args, profile)
    else:
        good = image_paths(args.good, "--good")
        default_weights(args)
        model = load_model(args, MethodOptions(resize=args.resize))
        profile = Profile.create(model, args.object, good, roi=args.roi)
    profile = with_threshold_options(profile, args)
    inspector = Inspector(profile, model, min_area=args.min_area)
    print_banner(args, profile, found)
    try:
        summary = run_predict(
            inspector,
            found.images,
            args.out,
            profile_path=args.profile,
            save_maps=args.save_maps,
            overwrite=args.overwrite,
            resume=args.resume,
            max_pixels=round(args.max_megapixels * MEGA),
            progress=not args.no_progress,
        )
    except OSError as exc:  # writing: the inputs' errors are rows, never exceptions
        return unwritable(args.out, exc)
    except KeyboardInterrupt:
        return interrupted(args.out)
    print(f"predict: {summary.text()}", file=sys.stderr)
    return 1 if summary.failed or found.unmatched else 0
