"""Measuring a profile's precision evidence (`winclip precision check`) and resolving `auto` from it.

`check_precision(profile, spec)` scores photos of the profile's part with PyTorch fp32 and with
every faster path this machine offers (winclip.backbones.precision.offered_paths) and returns the
`Evidence` (winclip.inspection.evidence) to store in the profile. The photos: `images` when
given, else the calibration's held-out photos, else the references leave-one-out (each scored
against the others), whichever files are still on disk unchanged (sha256). The exported paths
run exports kept under winclip's cache dir (`exports/`): the fp32 OpenVINO export of these
weights, made once, and an int8 one quantized by NNCF on the profile's good photos.

`resolve(profile, spec)`: the `ModelSpec` that `auto` runs for a profile (evidence.choose), with
the reason; an explicit precision stays, its reason saying what the evidence says of it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from scipy.stats import spearmanr

from .. import __version__
from ..backbones.openclip import pick_device
from ..backbones.precision import cpu_kind, native_bf16, offered_paths
from ..backbones.weights.registry import cache_root
from ..images import file_sha256, load_image
from ..model import WinCLIP, build_model
from ..options import REFERENCE, ModelSpec, RunPath
from .decisions import apply_roi, label_of
from .evidence import Decision, Evidence, PathEvidence, choose
from .profile import Profile

EXPORTS = "exports"  # under winclip's cache dir
MAX_CALIBRATION = 64  # good photos NNCF collects its statistics on
MAX_MARGIN_RATIO = 1e9  # |Δscore| / margin when an fp32 score sits exactly on the threshold
LIBRARIES = ("torch", "open_clip_torch", "openvino", "nncf", "onnxruntime")


@dataclass(frozen=True)
class Photos:
    """What is scored: file paths and where they came from (evidence.SOURCES)."""

    source: str
    paths: tuple[str, ...]


def scoring_key(profile: Profile) -> str:
    """sha256 of what changes a profile's scores and labels: weights, options, prototypes, references, ROI,
    thresholds (not its evidence, calibration report or creation date)."""
    meta = {
        "weights_id": profile.weights_id,
        "options": dataclasses.asdict(profile.options),
        "references": [list(profile.reference_hashes), list(profile.reference_views)],
        "thresholds": [profile.threshold, profile.review_threshold],
    }
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for t in profile.prototypes:
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    if profile.roi is not None:
        h.update(np.packbits(profile.roi).tobytes())
    return f"sha256:{h.hexdigest()}"


def libraries() -> dict[str, str]:
    """Versions of winclip and of the installed libraries that run a path."""
    found = {"winclip": __version__}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _unchanged(name: str, sha256: str) -> bool:
    path = Path(name)
    return path.is_file() and file_sha256(path) == sha256


def photos_for(profile: Profile, images: Sequence[str] | None) -> Photos:
    """`images`, else the calibration's held-out photos, else the references (leave-one-out); one line if none."""
    if images:
        return Photos("images", tuple(str(p) for p in images))
    cal = profile.calibration
    held = [c.name for c in (*cal.good, *cal.bad) if _unchanged(c.name, c.sha256)] if cal else []
    if len(held) >= 2:
        return Photos("held-out", tuple(held))
    refs = [n for n, h in zip(profile.reference_names, profile.reference_hashes, strict=True) if _unchanged(n, h)]
    if len(refs) >= 2 and len(refs) == profile.shots:
        return Photos("leave-one-out", tuple(refs))
    raise ValueError(
        "no photos to measure precision on: the profile's held-out and reference photos are not on disk here "
        "(or are fewer than 2); pass --images with photos of the part"
    )


def good_photos(profile: Profile, photos: Photos) -> list[str]:
    """The profile's good photos on disk for int8 calibration: references, then held-out good ones (or `photos`)."""
    found = [n for n, h in zip(profile.reference_names, profile.reference_hashes, strict=True) if _unchanged(n, h)]
    if profile.calibration:
        found += [c.name for c in profile.calibration.good if _unchanged(c.name, c.sha256)]
    found = list(dict.fromkeys(found)) or list(photos.paths)
    return found[:MAX_CALIBRATION]


@dataclass(frozen=True)
class Scored:
    scores: np.ndarray  # ROI applied, as decisions see them
    maps: list[np.ndarray]
    seconds: float


def score(model: WinCLIP, profile: Profile, photos: Photos) -> Scored:
    """Score the photos with `model` bound to the profile; leave-one-out: each reference against the others."""
    bound = profile.bind(model)
    paths = list(photos.paths)
    next(bound.iter_predict(paths[:1]))  # warm-up (plans, kernels, compiled runtimes): not timed
    scores, maps = [], []
    start = time.perf_counter()
    if photos.source == "leave-one-out":
        owner = np.repeat(np.arange(profile.shots), profile.reference_views)
        results = []
        for i, path in enumerate(paths):
            others = torch.from_numpy(np.flatnonzero(owner != i))
            assert profile.references is not None
            if len(others):
                bound.fit_features(profile.references[others])
            else:
                bound.fit(None)
            results.append(next(bound.iter_predict([path])))
        profile.apply(bound)  # the full memory back
    else:
        results = list(bound.iter_predict(paths))
    seconds = time.perf_counter() - start
    for r in results:
        if r.error is not None:
            raise ValueError(f"{r.source}: {r.error.reason}")
        assert r.score is not None and r.map is not None
        s, m = apply_roi(float(r.score), r.map.numpy(), profile.roi)
        scores.append(s)
        maps.append(m)
    return Scored(np.array(scores, dtype=np.float64), maps, seconds)


def compare(reference: Scored, got: Scored, threshold: float, review: float | None) -> dict[str, float]:
    """Spearman, label flips, max |Δscore| (and relative to the margin), max relative map difference."""
    ref, new = reference.scores, got.scores
    if np.ptp(ref) == 0 or np.ptp(new) == 0:
        rho = 1.0 if np.array_equal(np.argsort(ref), np.argsort(new)) else 0.0
    else:
        rho = float(spearmanr(ref, new).statistic)
    labels = [label_of(a, threshold, review) != label_of(b, threshold, review) for a, b in zip(ref, new, strict=True)]
    diff = float(np.abs(ref - new).max())
    margin = float(np.abs(ref - threshold).min())
    map_rel = max(
        float(np.abs(m - r).max() / max(np.abs(r).max(), 1e-12)) for m, r in zip(got.maps, reference.maps, strict=True)
    )
    return {
        "spearman": rho,
        "flips": int(sum(labels)),
        "score_diff": diff,
        "score_margin": min(diff / margin, MAX_MARGIN_RATIO) if margin > 0 else MAX_MARGIN_RATIO,
        "map_rel": map_rel,
    }


def _weights_tag(profile: Profile) -> str:
    """The cache name of a profile's exports: random weights (`random:seed=0`) are the same id for every
    architecture, so the backbone and its model config are part of the name."""
    kind, _, value = profile.weights_id.partition(":")
    model = json.dumps([profile.backbone, profile.weights_id, profile.model_config]).encode()
    digest = hashlib.sha256(model).hexdigest()[:12]
    return f"{kind}-{value.replace('=', '')[:16]}-{digest}-scales{''.join(map(str, sorted(profile.options.scales)))}"


def _export_folder(name: str, make: Callable[[Path], object]) -> Path:
    """A cached export folder, made by `make(tmp)` into a temporary sibling and renamed into place."""
    from ..backbones.runtime import read_export

    folder = cache_root() / EXPORTS / name
    if folder.is_dir():
        try:
            read_export(folder)
            return folder
        except (OSError, ValueError):
            shutil.rmtree(folder)  # a changed or broken cache entry: made again
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    make(tmp)
    tmp.rename(folder)
    return folder


def exported(reference: WinCLIP, profile: Profile, path: RunPath, calibration: list[str]) -> Path:
    """The export `path` runs: fp32 OpenVINO of these weights, or its int8 copy calibrated on `calibration`."""
    from ..backbones.export import export_backbone
    from ..backbones.quantize import calibration_digest, quantize_export

    scales = tuple(sorted(profile.options.scales))
    fp32 = _export_folder(
        f"{_weights_tag(profile)}-openvino", lambda out: export_backbone(reference.backbone, out, "openvino", scales)
    )
    if path.precision != "int8":
        return fp32
    pixels = [reference.backbone.preprocess(load_image(p, p)) for p in calibration]
    digest = calibration_digest(pixels).split(":")[1][:16]
    return _export_folder(f"{_weights_tag(profile)}-int8-{digest}", lambda out: quantize_export(fp32, out, pixels))


def path_spec(spec: ModelSpec, path: RunPath, export_dir: Path | None, reason: str | None = None) -> ModelSpec:
    """`spec` (the profile's weights) run through `path`."""
    return dataclasses.replace(
        spec,
        device="cpu" if path.runtime != "torch" else spec.device,
        precision=path.precision,
        runtime=path.runtime,
        export_dir=None if export_dir is None else str(export_dir),
        precision_reason=reason,
    )


def check_precision(
    profile: Profile,
    spec: ModelSpec,
    *,
    images: Sequence[str] | None = None,
    paths: Sequence[RunPath] | None = None,
    log: TextIO | None = None,
) -> Evidence:
    """Score photos of the part in fp32 and in each path (default: those this machine offers); the evidence."""
    photos = photos_for(profile, images)
    todo = list(offered_paths() if paths is None else paths)
    reference = build_model(path_spec(spec, REFERENCE, None, "the reference of the evidence"), profile.options)
    base = score(reference, profile, photos)
    rows = []
    for path in todo:
        if log:
            print(f"precision check: {path.name} on {len(photos.paths)} photo(s) ({photos.source})", file=log)
        folder = None if path.runtime == "torch" else exported(reference, profile, path, good_photos(profile, photos))
        model = build_model(path_spec(spec, path, folder), profile.options)
        got = score(model, profile, photos)
        export = None
        if folder is not None:
            meta = json.loads((folder / "export.json").read_text())
            export = {"folder": str(folder), "sha256": meta["files"][meta["model_file"]]["sha256"]}
        f = compare(base, got, profile.threshold, profile.review_threshold)
        ms = 1000 * got.seconds / len(photos.paths)
        rows.append(
            PathEvidence(
                path.name, f["spearman"], int(f["flips"]), f["score_margin"], f["score_diff"], f["map_rel"], ms, export
            )
        )
        del model
    return Evidence(
        weights_id=profile.weights_id,
        profile_key=scoring_key(profile),
        threshold=profile.threshold,
        source=photos.source,
        images=len(photos.paths),
        cpu=cpu_kind(),
        libraries=libraries(),
        reference_ms_per_image=1000 * base.seconds / len(photos.paths),
        paths=tuple(rows),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def runnable(row: PathEvidence, runtime: str | None = None, export_dir: str | None = None) -> str | None:
    """None when `row`'s path can run here now (and fits an explicit --runtime/--export-dir), else why not."""
    path = RunPath.parse(row.path)
    if runtime not in (None, "torch") and path.runtime != runtime:
        return f"--runtime {runtime} was asked for"
    if path.runtime == "torch":
        return None if path.precision != "bf16" or native_bf16() else "this CPU has no native bf16"
    if importlib.util.find_spec(path.runtime) is None:
        return f"{path.runtime} is not installed"
    folder = Path(export_dir or (row.export or {}).get("folder", ""))
    try:
        meta = json.loads((folder / "export.json").read_text())
        recorded = meta["files"][meta["model_file"]]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"its export {folder} is not there"
    return None if recorded == (row.export or {}).get("sha256") else f"the export {folder} is not the one measured"


def decide(profile: Profile, runtime: str | None = None, export_dir: str | None = None) -> Decision:
    """What auto runs for `profile` on this machine now (evidence.choose)."""
    return choose(
        profile.evidence,
        weights_id=profile.weights_id,
        profile_key=scoring_key(profile),
        cpu=cpu_kind(),
        runnable=lambda row: runnable(row, runtime, export_dir),
    )


def resolve(profile: Profile, spec: ModelSpec) -> ModelSpec:
    """The spec a profile runs with: auto on the CPU decided by its evidence; an explicit precision kept (with what
    the evidence says of it); GPUs untouched (auto = fp16 there)."""
    if pick_device(spec.device).type != "cpu":
        return spec
    asked = RunPath(spec.runtime, spec.precision)
    if spec.precision != "auto":
        row = profile.evidence.row(asked) if profile.evidence else None
        note = (
            "no evidence for this path: the threshold was not checked in it"
            if row is None
            else (f"evidence {'holds' if row.holds else 'MISSES'}: {row.figures()}")
        )
        return dataclasses.replace(spec, precision_reason=f"asked for; {note}" if asked != REFERENCE else None)
    explicit = spec.runtime if spec.runtime != "torch" else None
    decision = decide(profile, explicit, spec.export_dir)
    if decision.path == REFERENCE:
        if explicit:  # the export asked for, in fp32
            return dataclasses.replace(spec, precision="fp32", precision_reason=decision.reason)
        return path_spec(spec, REFERENCE, None, decision.reason)
    chosen = spec.export_dir or decision.export_dir
    return path_spec(spec, decision.path, None if chosen is None else Path(chosen), decision.reason)


def evidence_note(profile: Profile, path: str) -> str:
    """What the evidence says of scoring `profile` through `path` (the service shows it per profile)."""
    decision = decide(profile)
    if decision.path.name == path:
        return decision.reason
    if path == REFERENCE.name:
        return f"fp32, the reference ({decision.reason.removeprefix('auto: ')})"
    return f"UNCHECKED: no evidence that {path} keeps this profile's results here ({decision.reason})"


def shared_spec(folders: Sequence[Path], spec: ModelSpec) -> ModelSpec:
    """The one path a station serving the profiles in `folders` runs under auto: the path every profile's evidence
    chooses, if they agree on one, else fp32 (an explicit precision, or a GPU, stays as given). A profile that does
    not load is left out here (the station refuses it later with its reason)."""
    if spec.precision != "auto" or pick_device(spec.device).type != "cpu":
        return spec
    profiles = []
    for folder in folders:
        try:
            profiles.append(Profile.load(folder))
        except (OSError, ValueError):
            continue
    explicit = spec.runtime if spec.runtime != "torch" else None
    decisions = [decide(p, explicit, spec.export_dir) for p in profiles]
    chosen = {(d.path, spec.export_dir or d.export_dir) for d in decisions}
    if len(chosen) == 1 and decisions[0].path != REFERENCE:
        (path, where), first = chosen.pop(), decisions[0]
        reason = f"auto: {path.name} for all {len(decisions)} profile(s); {first.reason.removeprefix('auto: ')}"
        return path_spec(spec, path, None if where is None else Path(where), reason)
    why = "no profiles" if not decisions else "the profiles' evidence does not agree on a faster path"
    reason = f"auto: fp32, {why}"
    return dataclasses.replace(spec, precision="fp32", precision_reason=reason)
