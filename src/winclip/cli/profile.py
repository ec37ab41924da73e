"""`winclip profile`: create, calibrate, extend and show inspection profiles.

An inspection profile holds everything `winclip predict` needs for one product: model identity, prompts, text
prototypes, encoded good references, ROI and thresholds (safetensors + JSON, no pickle).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from ..method.prompts import PROMPT_SETS
from ..options import DEFAULT_BACKBONE, DEFAULT_PRETRAINED, RESIZE_MODES, MethodOptions
from . import HelpFormatter, add_command, add_model_options, load_model


def image_paths(inputs: list[str], what: str) -> list[str]:
    """Files, folders and globs → paths; an argument that matches nothing is a usage error."""
    from ..inspection.folder_run import discover

    found = discover(inputs)
    if found.unmatched:
        raise ValueError(f"{what}: nothing matches {', '.join(found.unmatched)}")
    return [str(item.path) for item in found.images]


def add_profile_model_options(parser: argparse.ArgumentParser) -> None:
    """Shared model options; backbone and weights default to the profile's own."""
    add_model_options(parser)
    parser.set_defaults(backbone=None, pretrained=None)


def default_weights(args: argparse.Namespace, profile=None) -> None:
    """--backbone/--pretrained left unset: the profile's own weights, or the package defaults without one."""
    if profile is None:
        args.backbone = args.backbone or DEFAULT_BACKBONE
        args.pretrained = args.pretrained or DEFAULT_PRETRAINED
    else:
        args.backbone = args.backbone or profile.backbone
        args.pretrained = args.pretrained or profile.pretrained or "none"


def model_for_profile(args: argparse.Namespace, profile):
    """The model a profile was made with (device, precision, batch size from the options); callers bind it."""
    default_weights(args, profile)
    return load_model(args, profile.options)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `profile` and its four verbs."""
    p = add_command(subparsers, "profile", __doc__)
    verbs = p.add_subparsers(title="verbs", metavar="VERB", required=True)

    def verb(name: str, help: str):
        return verbs.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)

    c = verb("create", "make a profile from an object name and a few good photos")
    c.add_argument("--object", required=True, help="object name, e.g. screw or metal_nut")
    c.add_argument("--good", nargs="*", default=[], metavar="IMAGE", help="good reference photos (none = zero-shot)")
    c.add_argument("--out", required=True, help="profile folder to write, e.g. screw.winclip")
    c.add_argument("--normal-state", action="append", default=[], metavar="STATE", help="extra normal state with {o}")
    c.add_argument("--anomalous-state", action="append", default=[], metavar="STATE", help="e.g. '{o} with a dent'")
    c.add_argument("--roi", metavar="MASK", help="region-of-interest mask image (nonzero = inspect)")
    c.add_argument("--threshold", type=float, default=0.5, help="threshold until calibrated")
    c.add_argument("--prompts", default="winclip", choices=sorted(PROMPT_SETS), help="prompt set")
    c.add_argument("--resize", default="squash", choices=RESIZE_MODES, help="non-square photos")
    c.add_argument("--overwrite", action="store_true", help="replace an existing profile folder")
    add_model_options(c)
    c.set_defaults(func=run_create)

    k = verb("calibrate", "set the threshold from held-out good (and bad) photos")
    k.add_argument("profile", help="profile folder")
    k.add_argument("--good", nargs="+", required=True, metavar="IMAGE", help="held-out good photos (not references)")
    k.add_argument("--bad", nargs="*", default=[], metavar="IMAGE", help="held-out defective photos (recall and F1)")
    k.add_argument("--target-fpr", type=float, default=0.01, help="false-alarm rate on good parts")
    k.add_argument("--review-fpr", type=float, help="a second, lower threshold for a 'review' band at this rate")
    add_profile_model_options(k)
    k.set_defaults(func=run_calibrate)

    a = verb("add-good", "add good photos (e.g. false alarms) to the references; recalibrates")
    a.add_argument("profile", help="profile folder")
    a.add_argument("images", nargs="+", metavar="IMAGE", help="good photos: files, folders, globs")
    add_profile_model_options(a)
    a.set_defaults(func=run_add_good)

    s = verb("show", "print what a profile holds")
    s.add_argument("profile", help="profile folder")
    s.set_defaults(func=run_show)


def run_create(args: argparse.Namespace) -> int:
    """Encode prompts and references, save the profile."""
    from ..inspection.profile import Profile
    from ..inspection.store import check_writable

    good = image_paths(args.good, "--good")
    check_writable(Path(args.out), overwrite=args.overwrite)  # before loading any model
    model = load_model(args, MethodOptions(resize=args.resize), prompts=args.prompts)
    profile = Profile.create(
        model,
        args.object,
        good,
        normal_states=args.normal_state,
        anomalous_states=args.anomalous_state,
        roi=args.roi,
        threshold=args.threshold,
    )
    folder = profile.save(args.out, overwrite=args.overwrite)
    print(profile.summary())
    print(f"wrote {folder}; next: winclip profile calibrate {folder} --good HELD_OUT_GOOD/", file=sys.stderr)
    return 0


def run_calibrate(args: argparse.Namespace) -> int:
    """Score held-out photos, set the threshold(s), save in place, print the report."""
    from ..inspection.profile import Profile

    good, bad = image_paths(args.good, "--good"), image_paths(args.bad, "--bad")
    profile = Profile.load(args.profile)
    model = model_for_profile(args, profile)
    profile = profile.calibrate(model, good, bad, target_fpr=args.target_fpr, review_fpr=args.review_fpr, progress=True)
    profile.save(args.profile, overwrite=True)
    print(profile.calibration.report())
    return 0


def run_add_good(args: argparse.Namespace) -> int:
    """Encode only the new photos, append them, recalibrate when calibrated before, save in place."""
    from ..inspection.profile import CalibrationChangedWarning, Profile

    images = image_paths(args.images, "images")
    profile = Profile.load(args.profile)
    model = model_for_profile(args, profile)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CalibrationChangedWarning)
        profile = profile.add_good(model, images, progress=True)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    profile.save(args.profile, overwrite=True)
    print(profile.summary())
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Print the profile's summary (loads JSON and tensors only; no model)."""
    from ..inspection.profile import Profile

    print(Profile.load(args.profile).summary())
    return 0
