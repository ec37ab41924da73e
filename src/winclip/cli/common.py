"""What the subcommands share: parser pieces, loading the model a request names, and the exit lines.

Imports nothing heavy at module level (the command line parses without torch).
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..options import (
    DEFAULT_BACKBONE,
    DEFAULT_BATCH_SIZE,
    DEFAULT_PRETRAINED,
    MAX_BATCH,
    OPTION_RANGES,
    PRECISION_CHOICES,
    RUNTIME_CHOICES,
)
from ..progress import plural

if TYPE_CHECKING:
    from ..inspection.inputs import Discovery
    from ..inspection.profile import Profile
    from ..method.prompts import PromptSet
    from ..model import WinCLIP
    from ..options import MethodOptions
    from .requests import ModelRequest, PredictRequest

# Exit statuses of every command (docs/security.md): 0 done; 1 done, but some inputs failed (predict, eval) or
# something differs (weights verify, weights where); 2 a usage error or an input refused in one line; 3 a file
# could not be read or written (a full disk, no permission, a read-only or missing folder): one line naming it.
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNWRITABLE = 3  # results could not be written (disk full, no permission); finished ones are kept
EXIT_INTERRUPTED = 130

PRETRAINED_HELP = (
    "open_clip pretrained tag, hf-hub:ORG/REPO, local-dir:FOLDER, a local checkpoint file, or 'none' for random weights"
)
PRECISION_HELP = (
    "auto = fp16 on CUDA; on the CPU fp32, or with a profile the fastest path its evidence holds for (winclip "
    "precision check); int8 = an int8 OpenVINO export (--runtime openvino)"
)
RAY_HELP = (
    "run on a Ray cluster (pip install \"winclip-anomaly[ray]\"): HOST:PORT of its head, or 'auto' (the cluster in "
    "RAY_ADDRESS or started on this machine with `ray start`, else a local one for this run); "
    "inputs are read by the workers at the same absolute paths"
)


def finite_float(text: str) -> float:
    """argparse type: a finite number (argparse names the option when it is not)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def number(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Callable[[str], float]:
    """argparse type: a finite number from `low` to `high` (either end excluded when open)."""

    def parse(text: str) -> float:
        value = finite_float(text)
        if (value <= low if low_open else value < low) or (value >= high if high_open else value > high):
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"must be in {interval}, got {text!r}")
        return value

    return parse


def count(low: int, high: int) -> Callable[[str], int]:
    """argparse type: a whole number from `low` to `high`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text[:40]!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low:,} to {high:,}, got {text[:40]}")
        return value

    return parse


def method_option(name: str) -> Callable[[str], float | int]:
    """argparse type of a method option, in the one range MethodOptions states for it (options.OPTION_RANGES)."""
    allowed = OPTION_RANGES[name]

    def parse(text: str) -> float | int:
        try:
            return allowed.check(name, int(text) if allowed.integer else finite_float(text))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


SHARE = number(0.0, 1.0, low_open=True, high_open=True)  # a rate: false-positive rates
THRESHOLD = number(0.0, 1.0, low_open=True)  # a decision threshold
REVIEW = number(0.0, 1.0)  # a review threshold
MAX_COUNT = 10**9  # counts of things a command makes (regions' pixels, images, ...)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to an option's help, except when there is no default to tell."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, [], argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)


def add_command(subparsers: argparse._SubParsersAction, name: str, doc: str | None) -> argparse.ArgumentParser:
    """A subcommand documented by its module's docstring: the first line (after "`winclip x`: ") is its
    one-line help, the paragraphs after it its description."""
    summary, _, rest = (doc or name).partition("\n\n")
    short = summary.split(": ", 1)[-1].rstrip(".")
    return subparsers.add_parser(
        name, help=short, description=" ".join(rest.split()) or short, formatter_class=HelpFormatter
    )


def add_model_options(parser: argparse.ArgumentParser, *, profile_defaults: bool = False) -> None:
    """The options every model-building subcommand shares; with `profile_defaults`, backbone and weights
    default to a profile's own (None here)."""
    g = parser.add_argument_group("model")
    backbone, pretrained = (None, None) if profile_defaults else (DEFAULT_BACKBONE, DEFAULT_PRETRAINED)
    g.add_argument("--backbone", default=backbone, help="open_clip ViT name or model-config .json")
    g.add_argument("--pretrained", default=pretrained, metavar="TAG|FILE|none", help=PRETRAINED_HELP)
    g.add_argument("--cache-dir", help="open_clip / Hugging Face cache folder holding downloaded weights")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto = cuda when available)")
    g.add_argument("--precision", default="auto", choices=PRECISION_CHOICES, help=PRECISION_HELP)
    g.add_argument("--batch-size", type=count(1, MAX_BATCH), default=DEFAULT_BATCH_SIZE, help="images per forward pass")


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """--runtime and --export-dir: run an exported vision tower (`winclip export`) instead of PyTorch's."""
    g = parser.add_argument_group("runtime (an exported model; text prototypes come from the profile)")
    g.add_argument("--runtime", default="torch", choices=RUNTIME_CHOICES, help="what runs the vision tower")
    g.add_argument("--export-dir", metavar="DIR", help="folder written by `winclip export` (with --runtime)")


def add_ray_options(parser: argparse.ArgumentParser) -> None:
    """`--ray ADDRESS` and the shape of the pool of Ray workers."""
    g = parser.add_argument_group("Ray cluster")
    g.add_argument("--ray", metavar="ADDRESS", help=RAY_HELP)
    g.add_argument(
        "--ray-workers",
        type=count(1, 100_000),
        metavar="N",
        help="Ray workers, each loading the model once (default: all that fit)",
    )
    g.add_argument(
        "--ray-cpus-per-worker", type=number(0, 1024, low_open=True), default=1.0, metavar="C", help="CPUs each"
    )
    g.add_argument(
        "--ray-gpus-per-worker",
        type=number(0, 64),
        default=0.0,
        metavar="G",
        help="GPUs per worker (0.5: two share one GPU)",
    )


def load_model(
    request: ModelRequest,
    options: MethodOptions | None = None,
    *,
    prompts: str | PromptSet = "winclip",
    profile: Profile | None = None,
    by_evidence: bool = False,
) -> WinCLIP:
    """Build the model a request names (winclip.build_model; backbone and weights defaulting to `profile`'s own)
    and print the banner to stderr. `by_evidence`: auto runs the path the profile's evidence chooses
    (winclip.inspection.precision_check.resolve); otherwise auto on the CPU is the fp32 reference."""
    from ..backbones.openclip import RandomWeightsWarning
    from ..model import banner, build_model

    spec = request.spec(profile)
    if by_evidence and profile is not None:
        from ..inspection.precision_check import resolve

        spec = resolve(profile, spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)  # the banner says it louder
        model = build_model(spec, options, batch_size=request.batch_size, prompts=prompts)
    print(banner(model), file=sys.stderr)
    return model


def image_paths(
    inputs: tuple[str, ...] | list[str], what: str, *, refuse_outputs: bool = False, headers: bool = True
) -> list[str]:
    """Files, folders and globs → paths, each checked before any model loads (winclip.inspection.inputs, no torch);
    a missing (with `headers`, also a non-image) file, or an argument that matches nothing, is a usage error."""
    from ..inspection.inputs import image_files

    return image_files(list(inputs), what, refuse_outputs=refuse_outputs, headers=headers)


def interrupted(out: str) -> int:
    """One line for Ctrl-C: what is kept and how to go on; exit status 130."""
    print(f"winclip: interrupted; finished results are in {out}; rerun with --resume to continue", file=sys.stderr)
    return EXIT_INTERRUPTED


def require_extra(command: str, extra: str, modules: tuple[str, ...]) -> None:
    """Import `modules` now, or one line naming the extra that brings the missing one (a usage error)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ValueError(
                f"winclip {command} needs the '{extra}' extra ({exc.name} is missing): "
                f'pip install "winclip-anomaly[{extra}]"'
            ) from None


def unwritable(out: str, exc: OSError) -> int:
    """One line for results that cannot be written (a full disk, a read-only folder); exit status 3."""
    print(
        f"winclip: error: cannot write the results in {out}: {exc.strerror or exc} "
        f"({exc.filename or out}); finished results are kept: fix it and rerun with --resume",
        file=sys.stderr,
    )
    return EXIT_UNWRITABLE


def profile_label(profile: Profile, profile_path: str | None) -> str:
    """How the banner names the decision rule."""
    if profile_path is None:
        return (
            f"no profile: object {profile.object_name!r}, {plural(profile.shots, 'reference')}, "
            f"threshold {profile.threshold:g}"
        )
    cal = "calibrated" if profile.calibration is not None else "NOT calibrated"
    return (
        f"profile {profile_path} ({cal}): object {profile.object_name!r}, {plural(profile.shots, 'reference')}, "
        f"threshold {profile.threshold:.6g}"
    )


def print_banner(request: PredictRequest, profile: Profile, found: Discovery, where: str = "") -> None:
    """The decision rule, a warning for an uncalibrated default threshold, the job and unmatched patterns."""
    print(f"predict: {profile_label(profile, request.profile)}", file=sys.stderr)
    if request.profile is None and request.threshold is None:
        print(
            "predict: threshold 0.5 is a default, not calibrated; pass --threshold or use a calibrated profile",
            file=sys.stderr,
        )
    print(f"predict: {plural(len(found.images), 'image')} -> {request.out}{where}", file=sys.stderr)
    for pattern in found.unmatched:
        print(f"winclip: {pattern}: no file matches", file=sys.stderr)
