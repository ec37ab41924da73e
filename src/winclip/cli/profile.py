"""`winclip profile`: create, calibrate, extend and show inspection profiles.

An inspection profile holds everything `winclip predict` needs for one product: model identity, prompts, text
prototypes, encoded good references, ROI and thresholds (safetensors + JSON, no pickle).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ..method.prompts import PROMPT_SETS
from ..options import RESIZE_MODES, MethodOptions
from .common import SHARE, THRESHOLD, HelpFormatter, add_command, add_model_options, image_paths, load_model
from .requests import AddGoodRequest, CalibrateRequest, CreateRequest

if TYPE_CHECKING:
    from ..inspection.profile import Profile
    from ..model import WinCLIP


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `profile` and its four verbs."""
    p = add_command(subparsers, "profile", __doc__)
    verbs = p.add_subparsers(title="verbs", metavar="VERB", required=True)

    def verb(name: str, help: str) -> argparse.ArgumentParser:
        return verbs.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)

    c = verb("create", "make a profile from an object name and a few good photos")
    c.add_argument("--object", required=True, help="object name, e.g. screw or metal_nut")
    c.add_argument("--good", nargs="*", default=[], metavar="IMAGE", help="good reference photos (none = zero-shot)")
    c.add_argument("--out", required=True, help="profile folder to write, e.g. screw.winclip")
    c.add_argument("--normal-state", action="append", default=[], metavar="STATE", help="extra normal state with {o}")
    c.add_argument("--anomalous-state", action="append", default=[], metavar="STATE", help="e.g. '{o} with a dent'")
    c.add_argument("--roi", metavar="MASK", help="region-of-interest mask image (nonzero = inspect)")
    c.add_argument("--threshold", type=THRESHOLD, default=0.5, help="threshold until calibrated")
    c.add_argument("--prompts", default="winclip", choices=sorted(PROMPT_SETS), help="prompt set")
    c.add_argument("--resize", default="squash", choices=RESIZE_MODES, help="non-square photos")
    c.add_argument("--overwrite", action="store_true", help="replace an existing profile folder")
    add_model_options(c)
    c.set_defaults(func=lambda args: create(CreateRequest.of(args)))

    k = verb("calibrate", "set the threshold from held-out good (and bad) photos")
    k.add_argument("profile", help="profile folder")
    k.add_argument("--good", nargs="+", required=True, metavar="IMAGE", help="held-out good photos (not references)")
    k.add_argument("--bad", nargs="*", default=[], metavar="IMAGE", help="held-out defective photos (recall and F1)")
    k.add_argument("--target-fpr", type=SHARE, default=0.01, help="false-alarm rate on good parts")
    k.add_argument("--review-fpr", type=SHARE, help="a second, lower threshold for a 'review' band at this rate")
    k.add_argument(
        "--precision-check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="then score the same photos with each faster path this machine offers and store the evidence",
    )
    add_model_options(k, profile_defaults=True)
    k.set_defaults(func=lambda args: calibrate(CalibrateRequest.of(args)))

    a = verb("add-good", "add good photos (e.g. false alarms) to the references; recalibrates")
    a.add_argument("profile", help="profile folder")
    a.add_argument("images", nargs="+", metavar="IMAGE", help="good photos: files, folders, globs")
    add_model_options(a, profile_defaults=True)
    a.set_defaults(func=lambda args: add_good(AddGoodRequest.of(args)))

    s = verb("show", "print what a profile holds")
    s.add_argument("profile", help="profile folder")
    s.set_defaults(func=run_show)


def create(request: CreateRequest) -> int:
    """Encode prompts and references, save the profile."""
    from ..inspection.store import check_writable
    from ..service.names import reserved

    good = image_paths(request.good, "--good", refuse_outputs=True)  # every file checked before torch is imported
    if request.roi:
        image_paths([request.roi], "--roi")
    out = Path(request.out)
    if reserved(out.name):  # served from a profiles folder, it would take the place of the station's own files
        raise ValueError(f"--out {out}: the name {out.name!r} is reserved for the inspection station's own files")
    check_writable(out, overwrite=request.overwrite)  # before loading any model
    from ..inspection.profile import Profile

    model = load_model(request.model, MethodOptions(resize=request.resize), prompts=request.prompts)
    profile = Profile.create(
        model,
        request.object,
        good,
        normal_states=request.normal_states,
        anomalous_states=request.anomalous_states,
        roi=request.roi,
        threshold=request.threshold,
    )
    folder = profile.save(request.out, overwrite=request.overwrite)
    print(profile.summary())
    print(f"wrote {folder}; next: winclip profile calibrate {folder} --good HELD_OUT_GOOD/", file=sys.stderr)
    return 0


def calibrate(request: CalibrateRequest) -> int:
    """Score held-out photos, set the threshold(s), save in place, print the report."""
    # named files checked before torch is imported; unreadable photos are skipped and reported, as in any batch
    good = image_paths(request.good, "--good", refuse_outputs=True, headers=False)
    bad = image_paths(request.bad, "--bad", headers=False)
    from ..inspection.show import read_checked

    read_checked(Path(request.profile))
    from ..inspection.profile import Profile

    profile = Profile.load(request.profile)
    model = load_model(request.model, profile.options, profile=profile)
    profile = profile.calibrate(
        model, good, bad, target_fpr=request.target_fpr, review_fpr=request.review_fpr, progress=True
    )
    profile.save(request.profile, overwrite=True)
    assert profile.calibration is not None
    print(profile.calibration.report())
    if profile.calibration.note:
        print(f"winclip: warning: {profile.calibration.note}", file=sys.stderr)
    if request.precision_check:
        profile = precision_evidence(request, profile, model)
    return 0


def precision_evidence(request: CalibrateRequest, profile: Profile, model: WinCLIP) -> Profile:
    """After calibrating in fp32: the evidence of each faster path on the same held-out photos, stored."""
    import dataclasses

    from ..backbones.precision import offered_paths
    from ..inspection.precision_check import check_precision, decide

    paths = offered_paths()
    if model.backbone.precision != "fp32" or model.backbone.runtime != "torch" or not paths:
        why = "calibrated outside PyTorch fp32" if paths else "this machine offers no faster path"
        print(f"precision check skipped: {why}; auto runs fp32 with this profile", file=sys.stderr)
        return profile
    from ..backbones.openclip import RandomWeightsWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)  # the banner said it
        evidence = check_precision(profile, request.model.spec(profile), paths=paths, log=sys.stderr)
    profile = dataclasses.replace(profile, evidence=evidence)
    profile.save(request.profile, overwrite=True)
    print(evidence.table())
    print(f"precision {decide(profile).reason}")
    return profile


def add_good(request: AddGoodRequest) -> int:
    """Encode only the new photos, append them, recalibrate when calibrated before, save in place."""
    images = image_paths(request.images, "add-good", refuse_outputs=True)  # checked before torch is imported
    from ..inspection.show import read_checked

    read_checked(Path(request.profile))
    from ..inspection.profile import CalibrationChangedWarning, Profile

    profile = Profile.load(request.profile)
    model = load_model(request.model, profile.options, profile=profile)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CalibrationChangedWarning)
        profile = profile.add_good(model, images, progress=True)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    profile.save(request.profile, overwrite=True)
    print(profile.summary())
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Print the profile's summary (reads JSON and tensors only: no model, no torch)."""
    from ..inspection.show import show

    print(show(args.profile))
    return 0
