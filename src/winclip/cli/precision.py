"""`winclip precision`: measure which faster paths keep a profile's results (precision by evidence).

`winclip precision check --profile P` scores photos of the part (--images, else the calibration's
held-out photos, else the references leave-one-out) with PyTorch fp32 and with every faster path
this machine offers (PyTorch and OpenVINO bf16 on CPUs with native bf16, OpenVINO int8 quantized
on the profile's good photos), and stores per path the Spearman correlation of the scores, the
labels that flip at the threshold, the score change against the margin, the map difference and
the speed in the profile. `--precision auto` (predict, serve) then runs the fastest path whose
evidence holds for these weights on this kind of CPU; without evidence, fp32.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from .common import HelpFormatter, add_command, add_model_options, image_paths
from .requests import ModelRequest

PATH_NAMES = ("torch-bf16", "openvino-bf16", "openvino-int8")


@dataclass(frozen=True)
class PrecisionCheckRequest:
    """`winclip precision check`: the profile, the photos to measure on (none = its own) and the paths (here, not in
    requests.py, which is at the size limit: its only user)."""

    profile: str
    images: tuple[str, ...]
    paths: tuple[str, ...]
    model: ModelRequest

    @classmethod
    def of(cls, args: argparse.Namespace) -> PrecisionCheckRequest:
        return cls(args.profile, tuple(args.images), tuple(args.paths or ()), ModelRequest.of(args))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `precision` and its verb `check`."""
    p = add_command(subparsers, "precision", __doc__)
    verbs = p.add_subparsers(title="verbs", metavar="VERB", required=True)
    c = verbs.add_parser(
        "check",
        help="score photos in fp32 and each faster path; store the evidence in the profile",
        description="score photos in fp32 and each faster path; store the evidence in the profile",
        formatter_class=HelpFormatter,
    )
    c.add_argument("--profile", required=True, help="profile folder (updated in place)")
    c.add_argument("--images", nargs="*", default=[], metavar="IMAGE", help="photos of the part: files, folders, globs")
    c.add_argument(
        "--paths", nargs="+", choices=PATH_NAMES, metavar="PATH", help="paths to measure (default: all offered here)"
    )
    add_model_options(c, profile_defaults=True)
    c.set_defaults(func=lambda args: check(PrecisionCheckRequest.of(args)), precision="fp32", device="cpu")


def check(request: PrecisionCheckRequest) -> int:
    """Measure, store in the profile, print the table and what auto now runs."""
    import dataclasses
    import warnings

    from ..backbones.openclip import RandomWeightsWarning
    from ..backbones.precision import cpu_summary, offered_paths
    from ..inspection.precision_check import check_precision, decide, photos_for
    from ..inspection.profile import Profile
    from ..options import RunPath

    images = image_paths(request.images, "--images") if request.images else None
    profile = Profile.load(request.profile)
    photos_for(profile, images)  # no photos: one line before any model is loaded
    paths = [RunPath.parse(p) for p in request.paths] if request.paths else offered_paths()
    if not paths:
        raise ValueError("this machine offers no faster path to check (no native bf16; OpenVINO or NNCF missing)")
    print(cpu_summary(), file=sys.stderr)
    if profile.pretrained is None:
        print(
            "precision check: RANDOM weights (--pretrained none): the evidence says nothing of real ones",
            file=sys.stderr,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        evidence = check_precision(profile, request.model.spec(profile), images=images, paths=paths, log=sys.stderr)
    profile = dataclasses.replace(profile, evidence=evidence)
    profile.save(request.profile, overwrite=True)
    print(evidence.table())
    print(f"precision {decide(profile).reason}")
    return 0
