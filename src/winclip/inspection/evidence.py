"""Precision by evidence: what a profile records about each faster path, and how `auto` chooses from it.

`winclip precision check` (and `winclip profile calibrate`) score photos of the profile's own part
with the reference path (PyTorch fp32) and with every faster path the machine offers (PyTorch
bf16 and OpenVINO bf16 where the CPU has native bf16, OpenVINO int8), and store an `Evidence`
in the profile: per path, the Spearman correlation of the image scores with fp32's, how many
labels would flip at the profile's threshold, the largest score change relative to the margin
(the smallest distance of an fp32 score from the threshold), the largest map difference relative
to the map's maximum, and its speed; with the weights' identity, the CPU's kind (model, ISA flags,
torch capability, ISA caps) and the library versions. A path holds when it keeps the ranking
(Spearman ≥ MIN_SPEARMAN), flips no label and keeps the maps (≤ MAX_MAP_REL).

`choose` is what `auto` runs (pure: the caller says what the profile and machine are now): the
fastest path whose evidence holds for these weights, this profile's references and threshold,
on this kind of CPU, and that can run here; fp32 otherwise, each time with the reason in words.
Evidence measured on other weights, another kind of CPU, or before the references or the
threshold changed is not used. The measuring is in winclip.inspection.precision_check.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..options import REFERENCE, RunPath

MIN_SPEARMAN = 0.999  # the image-score ranking is kept (issue 12's bar)
MAX_FLIPS = 0  # no label changes at the profile's threshold
MAX_MAP_REL = 1e-2  # max |map - fp32 map| / max |fp32 map|
SOURCES = ("images", "held-out", "leave-one-out")  # what was scored: --images, the calibration's photos, the refs


@dataclass(frozen=True)
class PathEvidence:
    """One path against fp32 on the same photos (module docstring); `export`: the folder and sha256 it ran."""

    path: str  # RunPath.name, e.g. "openvino-int8"
    spearman: float
    flips: int
    score_margin: float  # max |Δscore| / min |fp32 score - threshold| (< 1: no image came near flipping)
    score_diff: float  # max |Δscore|
    map_rel: float
    ms_per_image: float
    export: dict[str, str] | None = None  # {"folder": ..., "sha256": of its model file} for exported paths

    def to_json(self) -> dict:
        numbers = {k: float(getattr(self, k)) for k in ("spearman", "score_margin", "score_diff", "map_rel")}
        return {
            "path": self.path,
            **numbers,
            "flips": int(self.flips),
            "ms_per_image": float(self.ms_per_image),
            "export": self.export,
            "holds": self.holds,
        }

    @property
    def holds(self) -> bool:
        return self.spearman >= MIN_SPEARMAN and self.flips <= MAX_FLIPS and self.map_rel <= MAX_MAP_REL

    def figures(self) -> str:
        return (
            f"Spearman {self.spearman:.4f}, {self.flips} label flip(s), |Δscore| {self.score_margin:.2f}x the "
            f"margin, maps {self.map_rel:.1e}"
        )


@dataclass(frozen=True)
class Evidence:
    """What `winclip precision check` measured for a profile (module docstring)."""

    weights_id: str
    profile_key: str  # sha256 of what changes scores: options, prototypes, references, ROI, thresholds
    threshold: float
    source: str  # one of SOURCES
    images: int
    cpu: Mapping[str, object]  # precision.cpu_kind()
    libraries: Mapping[str, str]
    reference_ms_per_image: float
    paths: tuple[PathEvidence, ...]
    created: str = ""

    def to_json(self) -> dict:
        return {
            "weights_id": self.weights_id,
            "profile_key": self.profile_key,
            "threshold": float(self.threshold),
            "source": self.source,
            "images": int(self.images),
            "cpu": dict(self.cpu),
            "libraries": dict(self.libraries),
            "reference": {"path": REFERENCE.name, "ms_per_image": float(self.reference_ms_per_image)},
            "bars": {"min_spearman": MIN_SPEARMAN, "max_flips": MAX_FLIPS, "max_map_rel": MAX_MAP_REL},
            "paths": [p.to_json() for p in self.paths],
            "created": self.created,
        }

    @classmethod
    def from_json(cls, data: Mapping) -> Evidence:
        """The inverse of `to_json`; ValueError naming the first malformed field."""
        _need(isinstance(data, Mapping), "evidence must be an object")
        for key in ("weights_id", "profile_key", "source", "created"):
            _need(isinstance(data.get(key), str), f"evidence.{key} must be a string")
        _need(data["source"] in SOURCES, f"evidence.source must be one of {', '.join(SOURCES)}")
        _need(_number(data.get("threshold")) and _count(data.get("images")), "evidence threshold/images malformed")
        _need(isinstance(data.get("cpu"), Mapping) and isinstance(data.get("libraries"), Mapping), "evidence.cpu")
        ref = data.get("reference")
        if not isinstance(ref, Mapping) or not _number(ref.get("ms_per_image")):
            raise ValueError("evidence.reference lacks ms_per_image")
        rows = data.get("paths")
        if not isinstance(rows, list):
            raise ValueError("evidence.paths must be a list")
        return cls(
            weights_id=data["weights_id"],
            profile_key=data["profile_key"],
            threshold=float(data["threshold"]),
            source=data["source"],
            images=int(data["images"]),
            cpu=dict(data["cpu"]),
            libraries={str(k): str(v) for k, v in data["libraries"].items()},
            reference_ms_per_image=float(ref["ms_per_image"]),
            paths=tuple(_path_from_json(i, row) for i, row in enumerate(rows)),
            created=data["created"],
        )

    def row(self, path: RunPath) -> PathEvidence | None:
        return next((p for p in self.paths if p.path == path.name), None)

    def table(self) -> str:
        """A text table of the paths (winclip precision check prints it)."""
        lines = [
            f"evidence: {self.images} photo(s) ({self.source}), threshold {self.threshold:.6f}, "
            f"{self.cpu.get('model')} ({self.cpu.get('capability')}); fp32 {self.reference_ms_per_image:,.0f} ms/image",
            f"{'path':>14} {'spearman':>9} {'flips':>5} {'|Δs|/margin':>11} {'max|Δs|':>9} {'map rel':>8} "
            f"{'ms/image':>9} {'speed':>6}  bar: Spearman ≥ {MIN_SPEARMAN}, flips ≤ {MAX_FLIPS}, "
            f"maps ≤ {MAX_MAP_REL:g}",
        ]
        for p in self.paths:
            speed = self.reference_ms_per_image / p.ms_per_image if p.ms_per_image > 0 else float("nan")
            lines.append(
                f"{p.path:>14} {p.spearman:9.4f} {p.flips:>5} {p.score_margin:11.3f} {p.score_diff:9.2e} "
                f"{p.map_rel:8.1e} {p.ms_per_image:9,.0f} {speed:5.2f}x  {'holds' if p.holds else 'MISSES'}"
            )
        return "\n".join(lines)


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _path_from_json(i: int, row: object) -> PathEvidence:
    _need(isinstance(row, Mapping), f"evidence.paths[{i}] must be an object")
    assert isinstance(row, Mapping)
    RunPath.parse(str(row.get("path")))
    numbers = ("spearman", "score_margin", "score_diff", "map_rel", "ms_per_image")
    for key in numbers:
        _need(_number(row.get(key)), f"evidence.paths[{i}].{key} must be a number")
    _need(_count(row.get("flips")), f"evidence.paths[{i}].flips must be a count")
    export = row.get("export")
    _need(export is None or isinstance(export, Mapping), f"evidence.paths[{i}].export must be an object or null")
    return PathEvidence(
        path=str(row["path"]),
        flips=int(row["flips"]),
        export=None if export is None else {str(k): str(v) for k, v in export.items()},
        **{key: float(row[key]) for key in numbers},
    )


@dataclass(frozen=True)
class Decision:
    """What auto runs: a path (with the export folder it needs), and why."""

    path: RunPath
    export_dir: str | None
    reason: str
    evidence: PathEvidence | None = None


def same_cpu(recorded: Mapping[str, object], now: Mapping[str, object]) -> bool:
    """The same kind of CPU: model name, ISA flags, torch capability and ISA caps all equal."""
    return all(recorded.get(k) == now.get(k) for k in ("model", "flags", "capability", "caps"))


def choose(
    evidence: Evidence | None,
    *,
    weights_id: str,
    profile_key: str,
    cpu: Mapping[str, object],
    runnable: Callable[[PathEvidence], str | None],
) -> Decision:
    """The path auto runs (module docstring). `runnable(row)` is None when the path can run here now, else why not."""
    fp32 = REFERENCE

    def fallback(why: str) -> Decision:
        return Decision(fp32, None, f"auto: fp32, {why}")

    if evidence is None:
        return fallback("the profile has no precision evidence (winclip precision check --profile P)")
    if evidence.weights_id != weights_id:
        return fallback(f"the profile's evidence was measured on other weights ({evidence.weights_id[:23]}...)")
    if not same_cpu(evidence.cpu, cpu):
        return fallback(f"the profile's evidence was measured on another kind of CPU ({evidence.cpu.get('model')})")
    if evidence.profile_key != profile_key:
        return fallback("the references or thresholds changed since the evidence was measured (check again)")
    held = sorted((p for p in evidence.paths if p.holds), key=lambda p: p.ms_per_image)
    faster = [p for p in held if p.ms_per_image < evidence.reference_ms_per_image]
    blocked: list[str] = []
    for row in faster:
        why = runnable(row)
        if why is None:
            speed = evidence.reference_ms_per_image / row.ms_per_image
            return Decision(
                RunPath.parse(row.path),
                None if row.export is None else row.export["folder"],
                f"auto: {row.path}, evidence on {evidence.images} {evidence.source} photo(s) of these weights on "
                f"this CPU: {row.figures()}; {speed:.2f}x fp32's speed",
                row,
            )
        blocked.append(f"{row.path}: {why}")
    if blocked:
        return fallback("no path that holds can run here (" + "; ".join(blocked) + ")")
    misses = [f"{p.path}: {p.figures()}" for p in evidence.paths if not p.holds]
    ref = evidence.reference_ms_per_image
    misses += [f"{p.path} holds but ran at {ref / p.ms_per_image:.2f}x fp32's speed" for p in held[len(faster) :]]
    return fallback("no faster path's evidence holds" + (f" ({'; '.join(misses)})" if misses else ""))
