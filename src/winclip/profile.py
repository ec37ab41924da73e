"""Inspection profiles: everything `predict` needs for one product, saved without pickle.

A `Profile` is an immutable record of one inspection task. It pins the model it was made
with and carries everything that scoring needs, so loading one encodes nothing:

- backbone: `backbone` (= `model.info.name`), `pretrained` (tag or file asked for), `weights_id`
  (`model.info.weights_id`, the identity of the checkpoint actually loaded);
- preprocessing: `image_size`, `mean`, `std`, and the method options in `options`
  (`ModelOptions`: temperature, scales, image_scale, aggregation, resize, tile_overlap,
  tile_reduce, smooth_sigma);
- prompts: `object_name`, `object_phrase`, `normal_states`, `anomalous_states`, `templates`
  (the full lists used) and the two text `prototypes` `(D,)`;
- references: `references` = the raw `Features` of every reference view (K views for
  `resize="squash"`, more with tiles; `None` = zero-shot), `reference_views` (views per
  reference image), `reference_names`, `reference_hashes` (sha256 of the file, or of the
  decoded RGB pixels for in-memory images);
- decision: `roi` (bool `(H, W)` or None), `threshold`, `review_threshold` (None = no review
  band), `confidence_scale`, `calibration` (a `Calibration` or None); `version` of winclip.

API (all functions that change a profile return a new one):

    profile = Profile.create(model, "screw", good=["a.png", "b.png"], roi=None)   # encodes the refs
    profile.save("screw.winclip")                  # folder: profile.json + tensors.safetensors [+ roi.png]
    profile = Profile.load("screw.winclip")        # json + safetensors only: no pickle, no encoding
    model = profile.build_model(device="cuda")     # a WinCLIP with the profile's backbone and options
    profile.apply(model)                           # check compatibility (ProfileMismatchError), set
                                                   #   prototypes and references; returns the model
    profile = profile.calibrate(model, good=[...], bad=[...], target_fpr=0.01, review_fpr=0.05)
    print(profile.calibration.report())            # text histogram of good/bad scores vs thresholds
    profile = profile.add_good(model, ["false_alarm.png"])  # encodes ONLY the new images; recalibrates
    profile = profile.with_thresholds(0.7, review=0.6)
    profile.digest()                               # "sha256:..." of the content (provenance)

    inspector = Inspector(profile, model, min_area=0)       # applies the profile to the model (again,
                                                   #   by itself, if another inspector used the model)
    for r in inspector.iter_inspect(paths, batch_size=8, progress=True): ...   # streaming
    results = inspector.inspect(paths)             # one batch -> list[Inspection]

Each `Inspection` has `index`, `source`, and either `error` (`ImageError`) or: `score` (final
image score, ROI applied), `model_score`, `zero_shot`, `label` ("normal" / "review" /
"anomalous"), `confidence`, `regions` (tuple of `Region`), `map` (float32 `(H, W)` numpy array at
the image's own size, ROI applied).

Definitions (pure functions below):

- label: "anomalous" if score >= threshold; "review" if review_threshold <= score < threshold;
  else "normal".
- confidence (that the image is anomalous): `1 / (1 + exp(-(score - threshold) / scale))`, so
  exactly 0.5 at the threshold and strictly increasing in the score. `scale` is
  `confidence_scale`: 0.05 until calibrated, then the robust spread of the calibration good
  scores (IQR / 1.349, at least 1e-4).
- ROI: the mask (nonzero = inside) is resized to the image with nearest neighbour; the map is
  set to 0 outside it; the image score becomes `s * max_ROI(M) / max(M)` (s = model score,
  M = model map; the ratio is 1 when M is all zero). It lies in [0, s] ⊆ [0, 1], equals s
  exactly when the ROI covers the map's peak (so always when it covers everything), and for
  a given model score raising map values outside the ROI can only lower it.
- regions: 8-connected components (`scipy.ndimage.label`) of `map >= threshold`, each with its
  bounding box (x, y, width, height), area in pixels and peak map value; components smaller
  than `min_area` pixels are dropped; sorted by peak, highest first.
- calibration: threshold = `numpy.quantile(good_scores, 1 - target_fpr)` (numpy's default
  linear interpolation); the review threshold likewise at `1 - review_fpr`. With bad images,
  the F1-best threshold (over all observed scores, `score >= t` = anomalous) and the recall
  and false-positive rate at the chosen threshold are reported.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from scipy import ndimage

from . import __version__
from .backbone import Features
from .images import ImageError, ImageInput, file_sha256, load_image, source_name
from .model import WinCLIP
from .prompts import object_phrase


class CalibrationChangedWarning(UserWarning):
    """Stored calibration images changed on disk since calibration; they are re-scored as they are now."""

FORMAT = "winclip-profile"
FORMAT_VERSION = 1
PROFILE_JSON = "profile.json"
TENSORS_FILE = "tensors.safetensors"
ROI_FILE = "roi.png"
LABELS = ("normal", "review", "anomalous")
DEFAULT_THRESHOLD = 0.5
DEFAULT_CONFIDENCE_SCALE = 0.05


class ProfileMismatchError(ValueError):
    """The loaded model is not the one a profile was made with."""


class ProfileExistsError(FileExistsError, ValueError):
    """The profile folder exists and overwriting was not asked for."""


@dataclass(frozen=True)
class ModelOptions:
    """The method options of `WinCLIP` that change scores; a profile pins them."""

    temperature: float
    scales: tuple[int, ...]
    image_scale: bool
    aggregation: str
    resize: str
    tile_overlap: float
    tile_reduce: str
    smooth_sigma: float

    @classmethod
    def of(cls, model: WinCLIP) -> ModelOptions:
        """The options a model was built with."""
        return cls(
            model.temperature,
            tuple(model.scales),
            model.image_scale,
            model.aggregation,
            model.resize,
            model.tile_overlap,
            model.tile_reduce,
            model.smooth_sigma,
        )

    def as_kwargs(self) -> dict[str, object]:
        """These options as `WinCLIP(...)` keyword arguments."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Region:
    """One connected component of the mask: bounding box (x, y, width, height) in pixels, area, peak."""

    x: int
    y: int
    width: int
    height: int
    area: int
    peak: float


@dataclass(frozen=True)
class CalibrationImage:
    """One held-out image: its name, sha256 and final score."""

    name: str
    sha256: str
    score: float


@dataclass(frozen=True)
class Calibration:
    """Held-out scores and the thresholds chosen from them (see the module docstring)."""

    target_fpr: float
    review_fpr: float | None
    good: tuple[CalibrationImage, ...]
    bad: tuple[CalibrationImage, ...]
    skipped: tuple[tuple[str, str, str], ...]  # ("good" | "bad", name, reason) of images not scored
    threshold: float
    review_threshold: float | None
    fpr: float  # fraction of good scores >= threshold
    recall: float | None  # fraction of bad scores >= threshold
    f1_threshold: float | None
    f1: float | None

    def report(self, bins: int = 20, width: int = 40) -> str:
        """A text report: thresholds, rates and a histogram of good (#) and bad (x) scores."""
        good = np.array([g.score for g in self.good])
        bad = np.array([b.score for b in self.bad])
        lines = [
            f"calibration: {len(good)} good, {len(bad)} bad, {len(self.skipped)} skipped",
            f"threshold {self.threshold:.6f} = quantile(good, 1 - {self.target_fpr:g}); "
            f"false alarms on the good images: {self.fpr:.2%}",
        ]
        if self.review_threshold is not None:
            lines.append(f"review threshold {self.review_threshold:.6f} = quantile(good, 1 - {self.review_fpr:g})")
        if self.recall is not None:
            lines.append(f"recall at the threshold: {self.recall:.2%}")
        if self.f1_threshold is not None:
            lines.append(f"F1-best threshold {self.f1_threshold:.6f} (F1 {self.f1:.3f})")
        for kind, name, reason in self.skipped:
            lines.append(f"skipped {kind} image {name}: {reason}")
        lines.append(score_histogram(good, bad, self.threshold, self.review_threshold, bins=bins, width=width))
        return "\n".join(lines)


# -- pure decision functions ---------------------------------------------------------------


def fpr_threshold(good_scores: Sequence[float] | np.ndarray, target_fpr: float) -> float:
    """Threshold at the (1 − target_fpr) quantile of good scores (numpy linear interpolation)."""
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"target false-positive rate must be in (0, 1), got {target_fpr}")
    scores = np.asarray(good_scores, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("calibration needs at least one good image that could be scored")
    return float(np.quantile(scores, 1.0 - target_fpr))


def f1_best_threshold(good_scores: np.ndarray, bad_scores: np.ndarray) -> tuple[float, float]:
    """The observed score t maximising F1 of `score >= t` = anomalous (highest t on ties): (t, F1)."""
    scores = np.concatenate([good_scores, bad_scores]).astype(np.float64)
    is_bad = np.concatenate([np.zeros(len(good_scores)), np.ones(len(bad_scores))])
    candidates = np.unique(scores)
    flagged = scores[None, :] >= candidates[:, None]  # (T, N)
    tp = (flagged * is_bad).sum(axis=1)
    fp = (flagged * (1 - is_bad)).sum(axis=1)
    fn = is_bad.sum() - tp
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    best = np.flatnonzero(f1 == f1.max())[-1]
    return float(candidates[best]), float(f1[best])


def label_of(score: float, threshold: float, review_threshold: float | None = None) -> str:
    """"anomalous" if score >= threshold, "review" if review_threshold <= score < threshold, else "normal"."""
    if score >= threshold:
        return "anomalous"
    if review_threshold is not None and score >= review_threshold:
        return "review"
    return "normal"


def confidence(score: float, threshold: float, scale: float) -> float:
    """Logistic confidence that the image is anomalous: 0.5 at the threshold, increasing in the score."""
    z = (score - threshold) / scale
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def roi_for(roi: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The bool ROI `(h, w)` resized to `size` = (H, W) with nearest neighbour."""
    if roi.shape == size:
        return roi
    img = Image.fromarray(roi.astype(np.uint8) * 255).resize((size[1], size[0]), Image.Resampling.NEAREST)
    return np.asarray(img) > 0


def apply_roi(score: float, score_map: np.ndarray, roi: np.ndarray | None) -> tuple[float, np.ndarray]:
    """Confine a result to the ROI: map 0 outside, score s·max_ROI(M)/max(M) (module docstring)."""
    if roi is None:
        return score, score_map
    inside = roi_for(roi, score_map.shape)
    masked = np.where(inside, score_map, np.float32(0.0)).astype(np.float32)
    peak = float(score_map.max())
    ratio = 1.0 if peak <= 0.0 else float(masked.max()) / peak
    return score * ratio, masked


def find_regions(score_map: np.ndarray, threshold: float, min_area: int = 0) -> tuple[Region, ...]:
    """8-connected components of `score_map >= threshold` with area >= min_area, highest peak first."""
    mask = score_map >= threshold
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return ()
    index = np.arange(1, n + 1)
    areas = ndimage.sum_labels(mask, labels, index)
    peaks = ndimage.maximum(score_map, labels, index)
    regions = [
        Region(sl[1].start, sl[0].start, sl[1].stop - sl[1].start, sl[0].stop - sl[0].start, int(a), float(p))
        for sl, a, p in zip(ndimage.find_objects(labels), areas, peaks)
        if a >= min_area
    ]
    return tuple(sorted(regions, key=lambda r: (-r.peak, r.y, r.x)))


def score_histogram(
    good: np.ndarray,
    bad: np.ndarray,
    threshold: float,
    review_threshold: float | None = None,
    bins: int = 20,
    width: int = 40,
) -> str:
    """Text histogram of good (#) and bad (x) scores; the bins holding the thresholds are marked."""
    values = np.concatenate([good, bad, [threshold] + ([review_threshold] if review_threshold is not None else [])])
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        lo, hi = lo - 1e-6, hi + 1e-6
    edges = np.linspace(lo, hi, bins + 1)
    g, _ = np.histogram(good, edges)
    b, _ = np.histogram(bad, edges)
    peak = max(1, int(g.max(initial=0)), int(b.max(initial=0)))
    lines = ["score range          good  bad"]
    for i in range(bins):
        marks = []
        for name, t in (("threshold", threshold), ("review", review_threshold)):
            if t is not None and (edges[i] <= t < edges[i + 1] or (i == bins - 1 and t == edges[-1])):
                marks.append(f"<-- {name} {t:.4f}")
        bar = "#" * round(width * g[i] / peak) + "x" * round(width * b[i] / peak)
        lines.append(f"[{edges[i]:.4f}, {edges[i + 1]:.4f}) {g[i]:4d} {b[i]:4d} {bar} {' '.join(marks)}".rstrip())
    return "\n".join(lines)


# -- image helpers ---------------------------------------------------------------------------


def image_digest(src: ImageInput, image: Image.Image | None = None) -> str:
    """sha256 of a file's bytes, or of the decoded RGB pixels (with the size) for in-memory images."""
    if isinstance(src, (str, Path)):
        return file_sha256(src)
    image = image if image is not None else load_image(src, source_name(src, 0))
    h = hashlib.sha256(f"{image.width}x{image.height}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class _Encoded:
    features: Features
    views: tuple[int, ...]
    names: tuple[str, ...]
    hashes: tuple[str, ...]


def _encode_references(model: WinCLIP, images: Sequence[ImageInput]) -> _Encoded:
    """Decode (ImageError names a bad file), preprocess and encode reference images, batch by batch."""
    loaded = [(source_name(src, i), src, load_image(src, source_name(src, i), model.min_size)) for i, src in enumerate(images)]
    views_per = [model.views(img)[0] for _, _, img in loaded]
    flat = [v for vs in views_per for v in vs]
    parts = [model.encode(torch.stack(flat[i : i + model.batch_size])) for i in range(0, len(flat), model.batch_size)]
    return _Encoded(
        Features.cat(parts).to("cpu"),
        tuple(len(vs) for vs in views_per),
        tuple(name for name, _, _ in loaded),
        tuple(image_digest(src, img) for _, src, img in loaded),
    )


def _roi_array(roi: ImageInput | np.ndarray | None) -> np.ndarray | None:
    """A bool ROI from a mask image/path/array (nonzero = inside); refuses an empty ROI."""
    if roi is None:
        return None
    if isinstance(roi, np.ndarray) and roi.ndim == 2:
        arr = roi != 0
    else:
        arr = np.asarray(load_image(roi, source_name(roi, 0), 1).convert("L")) > 0
    if not arr.any():
        raise ValueError(f"{source_name(roi, 0)}: the ROI mask is empty (no nonzero pixel)")
    return arr


def check_writable(folder: Path, *, overwrite: bool) -> None:
    """Raise ProfileExistsError if `folder` exists (unless overwrite) or is not a folder."""
    if folder.exists() and not overwrite:
        raise ProfileExistsError(f"{folder}: already exists; pass overwrite=True (--overwrite) to replace it")
    if folder.exists() and not folder.is_dir():
        raise ProfileExistsError(f"{folder}: exists and is not a profile folder")


# -- the profile -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Profile:
    """One inspection task: model identity, prompts, prototypes, references, ROI and thresholds."""

    backbone: str
    pretrained: str | None
    weights_id: str
    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    options: ModelOptions
    object_name: str
    object_phrase: str
    normal_states: tuple[str, ...]
    anomalous_states: tuple[str, ...]
    templates: tuple[str, ...]
    prototypes: tuple[torch.Tensor, torch.Tensor]
    references: Features | None
    reference_views: tuple[int, ...]
    reference_names: tuple[str, ...]
    reference_hashes: tuple[str, ...]
    roi: np.ndarray | None = None
    threshold: float = DEFAULT_THRESHOLD
    review_threshold: float | None = None
    confidence_scale: float = DEFAULT_CONFIDENCE_SCALE
    calibration: Calibration | None = None
    version: str = __version__
    created: str = ""

    # -- making one ----------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        model: WinCLIP,
        object_name: str,
        good: Sequence[ImageInput] = (),
        *,
        normal_states: Sequence[str] = (),
        anomalous_states: Sequence[str] = (),
        roi: ImageInput | np.ndarray | None = None,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> Profile:
        """Encode the prompts and the good references with `model` (which is left fitted to them)."""
        prompt_set = model.prompts.extended(normal_states, anomalous_states)
        model.set_object(object_name, normal_states=normal_states, anomalous_states=anomalous_states)
        t_n, t_a = model.prototypes_
        encoded = _encode_references(model, good) if len(good) else None
        profile = cls(
            backbone=model.info.name,
            pretrained=model.info.pretrained,
            weights_id=model.info.weights_id,
            image_size=tuple(model.info.image_size),
            mean=tuple(model.info.mean),
            std=tuple(model.info.std),
            options=ModelOptions.of(model),
            object_name=object_name,
            object_phrase=object_phrase(object_name),
            normal_states=prompt_set.normal_states,
            anomalous_states=prompt_set.anomalous_states,
            templates=prompt_set.templates,
            prototypes=(t_n.detach().cpu().clone(), t_a.detach().cpu().clone()),
            references=encoded.features if encoded else None,
            reference_views=encoded.views if encoded else (),
            reference_names=encoded.names if encoded else (),
            reference_hashes=encoded.hashes if encoded else (),
            roi=_roi_array(roi),
            threshold=float(threshold),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        profile._check_thresholds()
        profile.apply(model)
        return profile

    @property
    def shots(self) -> int:
        """Number of reference images (0 = zero-shot)."""
        return len(self.reference_names)

    def _check_thresholds(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.review_threshold is not None and not 0.0 <= self.review_threshold <= self.threshold:
            raise ValueError(f"review threshold {self.review_threshold} must be in [0, threshold {self.threshold}]")
        if self.confidence_scale <= 0:
            raise ValueError(f"confidence scale must be > 0, got {self.confidence_scale}")

    def with_thresholds(self, threshold: float, review: float | None = None) -> Profile:
        """The same profile with other thresholds (checked)."""
        new = dataclasses.replace(self, threshold=float(threshold), review_threshold=None if review is None else float(review))
        new._check_thresholds()
        return new

    # -- binding to a model --------------------------------------------------------------

    def check(self, model: WinCLIP) -> None:
        """Raise ProfileMismatchError unless `model` has this profile's backbone, weights and options."""
        here = f"{self.backbone} ({self.weights_id})"
        there = f"{model.info.name} ({model.info.weights_id})"
        if model.info.name != self.backbone or model.info.weights_id != self.weights_id:
            raise ProfileMismatchError(
                f"the profile was made with {here} but the loaded model is {there}; "
                f"load the same backbone and checkpoint (--backbone {self.backbone} --pretrained {self.pretrained or 'none'})"
            )
        if tuple(model.info.image_size) != self.image_size or tuple(model.info.mean) != self.mean or tuple(model.info.std) != self.std:
            raise ProfileMismatchError(f"the profile's preprocessing differs from the loaded model {there}")
        if ModelOptions.of(model) != self.options:
            raise ProfileMismatchError(
                f"the profile was made with options {self.options} but the model has {ModelOptions.of(model)}"
            )

    def apply(self, model: WinCLIP) -> WinCLIP:
        """Check `model`, then give it this profile's prototypes and references (no encoding)."""
        self.check(model)
        model.set_prototypes(*self.prototypes)
        if self.references is None:
            return model.fit(None)
        return model.fit_features(self.references.to(model.device))

    def build_model(
        self,
        *,
        pretrained: str | None = None,
        device: str | None = None,
        precision: str = "auto",
        batch_size: int = 8,
        cache_dir: str | None = None,
        backbone: str | None = None,
    ) -> WinCLIP:
        """A WinCLIP with this profile's backbone (unless given), weights tag and options, profile applied."""
        model = WinCLIP(
            backbone or self.backbone,
            self.pretrained if pretrained is None else pretrained,
            device=device,
            precision=precision,
            batch_size=batch_size,
            cache_dir=cache_dir,
            **self.options.as_kwargs(),
        )
        return self.apply(model)

    # -- references and calibration ------------------------------------------------------

    def add_good(self, model: WinCLIP, images: Sequence[ImageInput], *, progress: bool = False) -> Profile:
        """Append good images (false alarms) to the references, encoding only them; recalibrate if calibrated."""
        if not len(images):
            raise ValueError("add_good needs at least one image")
        self.check(model)
        new = _encode_references(model, images)
        refs = new.features if self.references is None else Features.cat([self.references, new.features])
        profile = dataclasses.replace(
            self,
            references=refs,
            reference_views=self.reference_views + new.views,
            reference_names=self.reference_names + new.names,
            reference_hashes=self.reference_hashes + new.hashes,
        )
        profile.apply(model)
        cal = self.calibration
        if cal is None:
            return profile
        changed = [c.name for c in (*cal.good, *cal.bad) if Path(c.name).is_file() and file_sha256(c.name) != c.sha256]
        if changed:
            warnings.warn(
                f"{len(changed)} calibration image(s) changed on disk since calibration and are re-scored as they "
                f"are now: {', '.join(changed[:5])}{', ...' if len(changed) > 5 else ''}",
                CalibrationChangedWarning,
                stacklevel=2,
            )
        return profile.calibrate(
            model,
            good=[g.name for g in cal.good] + [name for kind, name, _ in cal.skipped if kind == "good"],
            bad=[b.name for b in cal.bad] + [name for kind, name, _ in cal.skipped if kind == "bad"],
            target_fpr=cal.target_fpr,
            review_fpr=cal.review_fpr,
            progress=progress,
        )

    def calibrate(
        self,
        model: WinCLIP,
        good: Sequence[ImageInput],
        bad: Sequence[ImageInput] = (),
        *,
        target_fpr: float = 0.01,
        review_fpr: float | None = None,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> Profile:
        """Score held-out images with this profile; threshold(s) from the good scores (module docstring)."""
        if review_fpr is not None and not target_fpr < review_fpr < 1.0:
            raise ValueError(f"review FPR {review_fpr} must lie between the target FPR {target_fpr} and 1")
        fpr_threshold([0.0], target_fpr)  # validates target_fpr before any scoring
        good, bad = ([str(Path(x).resolve()) if isinstance(x, (str, Path)) else x for x in imgs] for imgs in (good, bad))
        inspector = Inspector(self, model)
        scored: dict[str, list[CalibrationImage]] = {"good": [], "bad": []}
        skipped: list[tuple[str, str, str]] = []
        for kind, images in (("good", good), ("bad", bad)):
            for r in inspector.iter_inspect(images, batch_size=batch_size, progress=progress):
                if r.error is not None:
                    skipped.append((kind, r.source, r.error.reason))
                    continue
                scored[kind].append(CalibrationImage(r.source, image_digest(images[r.index]), r.score))
        g = np.array([c.score for c in scored["good"]])
        b = np.array([c.score for c in scored["bad"]])
        threshold = min(max(fpr_threshold(g, target_fpr), np.nextafter(0.0, 1.0)), 1.0)
        review = None if review_fpr is None else fpr_threshold(g, review_fpr)
        f1_t, f1 = f1_best_threshold(g, b) if len(b) else (None, None)
        q75, q25 = np.quantile(g, [0.75, 0.25])
        calibration = Calibration(
            target_fpr=float(target_fpr),
            review_fpr=None if review_fpr is None else float(review_fpr),
            good=tuple(scored["good"]),
            bad=tuple(scored["bad"]),
            skipped=tuple(skipped),
            threshold=threshold,
            review_threshold=review,
            fpr=float((g >= threshold).mean()),
            recall=float((b >= threshold).mean()) if len(b) else None,
            f1_threshold=f1_t,
            f1=f1,
        )
        return dataclasses.replace(
            self,
            threshold=threshold,
            review_threshold=review,
            confidence_scale=max(float(q75 - q25) / 1.349, 1e-4),
            calibration=calibration,
        )

    # -- persistence ---------------------------------------------------------------------

    def _tensors(self) -> dict[str, torch.Tensor]:
        out = {"prototype.normal": self.prototypes[0], "prototype.anomalous": self.prototypes[1]}
        if self.references is not None:
            out["reference.image"] = self.references.image
            out["reference.patches"] = self.references.patches
            out.update({f"reference.windows.{k}": v for k, v in self.references.windows.items()})
        return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in out.items()}

    def _meta(self) -> dict:
        cal = None
        if self.calibration is not None:
            cal = dataclasses.asdict(self.calibration)
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "version": self.version,
            "created": self.created,
            "backbone": self.backbone,
            "pretrained": self.pretrained,
            "weights_id": self.weights_id,
            "preprocess": {"image_size": list(self.image_size), "mean": list(self.mean), "std": list(self.std),
                           "resize": self.options.resize},
            "options": dataclasses.asdict(self.options),
            "prompts": {
                "object_name": self.object_name,
                "object_phrase": self.object_phrase,
                "normal_states": list(self.normal_states),
                "anomalous_states": list(self.anomalous_states),
                "templates": list(self.templates),
            },
            "references": [
                {"name": n, "sha256": h, "views": v}
                for n, h, v in zip(self.reference_names, self.reference_hashes, self.reference_views)
            ],
            "roi": None if self.roi is None else {"file": ROI_FILE, "height": self.roi.shape[0], "width": self.roi.shape[1]},
            "threshold": self.threshold,
            "review_threshold": self.review_threshold,
            "confidence_scale": self.confidence_scale,
            "calibration": cal,
        }

    def digest(self) -> str:
        """`sha256:<hex>` of the content (metadata but its creation time, tensors, ROI): its identity in provenance."""
        meta = {k: v for k, v in self._meta().items() if k != "created"}
        h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
        for name, t in sorted(self._tensors().items()):
            h.update(name.encode())
            h.update(t.numpy().tobytes())
        if self.roi is not None:
            h.update(np.packbits(self.roi).tobytes())
        return f"sha256:{h.hexdigest()}"

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the folder `path` (profile.json, tensors.safetensors, roi.png); refuses to overwrite unless asked."""
        folder = Path(path)
        check_writable(folder, overwrite=overwrite)
        folder.mkdir(parents=True, exist_ok=True)
        files = {PROFILE_JSON: (json.dumps(self._meta(), indent=2) + "\n").encode()}
        buffer = io.BytesIO()
        if self.roi is not None:
            Image.fromarray(self.roi.astype(np.uint8) * 255).save(buffer, format="PNG")
            files[ROI_FILE] = buffer.getvalue()
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            save_file(self._tensors(), os.path.join(tmp, TENSORS_FILE), metadata={"format": FORMAT})
            for name, data in files.items():
                Path(tmp, name).write_bytes(data)
            for name in (TENSORS_FILE, *files):
                os.replace(os.path.join(tmp, name), folder / name)
        if self.roi is None and (folder / ROI_FILE).exists():
            (folder / ROI_FILE).unlink()
        return folder

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        """Read a profile folder: JSON and safetensors only (nothing is unpickled, executed or encoded)."""
        folder = Path(path)
        if not (folder / PROFILE_JSON).is_file():
            raise FileNotFoundError(f"{folder}: not a winclip profile (no {PROFILE_JSON})")
        try:
            meta = json.loads((folder / PROFILE_JSON).read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{folder / PROFILE_JSON}: invalid JSON ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{folder}: not a {FORMAT} version {FORMAT_VERSION} "
                f"(found {meta.get('format') if isinstance(meta, dict) else type(meta).__name__!r})"
            )
        if not (folder / TENSORS_FILE).is_file():
            raise FileNotFoundError(f"{folder}: {TENSORS_FILE} is missing")
        try:
            return cls._from_files(folder, meta, load_file(str(folder / TENSORS_FILE)))
        except (KeyError, TypeError, ValueError, OSError, SafetensorError) as exc:
            raise ValueError(f"{folder}: malformed profile ({type(exc).__name__}: {exc})") from None

    @classmethod
    def _from_files(cls, folder: Path, meta: dict, tensors: dict[str, torch.Tensor]) -> Profile:
        """Build from the parsed profile.json, the tensors and the ROI file of `folder`."""
        refs = None
        if "reference.image" in tensors:
            windows = {
                int(k.rsplit(".", 1)[1]): v for k, v in tensors.items() if k.startswith("reference.windows.")
            }
            refs = Features(tensors["reference.image"], dict(sorted(windows.items())), tensors["reference.patches"])
        roi = None
        if meta["roi"] is not None:
            roi = _roi_array(folder / ROI_FILE)
        cal = meta["calibration"]
        calibration = None
        if cal is not None:
            calibration = Calibration(
                **{
                    **cal,
                    "good": tuple(CalibrationImage(**c) for c in cal["good"]),
                    "bad": tuple(CalibrationImage(**c) for c in cal["bad"]),
                    "skipped": tuple(tuple(s) for s in cal["skipped"]),
                }
            )
        p = meta["prompts"]
        pre = meta["preprocess"]
        options = meta["options"]
        return cls(
            backbone=meta["backbone"],
            pretrained=meta["pretrained"],
            weights_id=meta["weights_id"],
            image_size=tuple(pre["image_size"]),
            mean=tuple(pre["mean"]),
            std=tuple(pre["std"]),
            options=ModelOptions(**{**options, "scales": tuple(options["scales"])}),
            object_name=p["object_name"],
            object_phrase=p["object_phrase"],
            normal_states=tuple(p["normal_states"]),
            anomalous_states=tuple(p["anomalous_states"]),
            templates=tuple(p["templates"]),
            prototypes=(tensors["prototype.normal"], tensors["prototype.anomalous"]),
            references=refs,
            reference_views=tuple(r["views"] for r in meta["references"]),
            reference_names=tuple(r["name"] for r in meta["references"]),
            reference_hashes=tuple(r["sha256"] for r in meta["references"]),
            roi=roi,
            threshold=float(meta["threshold"]),
            review_threshold=meta["review_threshold"],
            confidence_scale=float(meta["confidence_scale"]),
            calibration=calibration,
            version=meta["version"],
            created=meta["created"],
        )

    def summary(self) -> str:
        """A few lines describing the profile (for `winclip profile show`)."""
        lines = [
            f"object: {self.object_name!r} (phrase {self.object_phrase!r}); "
            f"{len(self.normal_states)} normal and {len(self.anomalous_states)} anomalous states x {len(self.templates)} templates",
            f"model: {self.backbone}, pretrained {self.pretrained or 'none (random weights)'}, weights {self.weights_id}",
            f"options: {self.options}",
            f"references: {self.shots} image(s), {sum(self.reference_views)} view(s)"
            + "".join(f"\n  {n}  sha256:{h[:16]}..." for n, h in zip(self.reference_names, self.reference_hashes)),
            f"roi: {'none' if self.roi is None else f'{self.roi.shape[1]}x{self.roi.shape[0]}, {self.roi.mean():.1%} inside'}",
            f"threshold: {self.threshold:.6f}"
            + ("" if self.review_threshold is None else f", review from {self.review_threshold:.6f}")
            + f"; confidence scale {self.confidence_scale:.6g}",
            f"made with winclip {self.version} on {self.created or 'unknown date'}; digest {self.digest()}",
        ]
        if self.calibration is not None:
            lines.append(self.calibration.report())
        else:
            lines.append("calibration: none (run `winclip profile calibrate`)")
        return "\n".join(lines)


# -- running images through a profile ------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Inspection:
    """One inspected image: the decision and map, or the error that stopped it (module docstring)."""

    index: int
    source: str
    score: float | None = None
    model_score: float | None = None
    zero_shot: float | None = None
    label: str | None = None
    confidence: float | None = None
    regions: tuple[Region, ...] = ()
    map: np.ndarray | None = None
    error: ImageError | None = None


class Inspector:
    """A profile bound to a model: streams images to `Inspection` results.

    Several inspectors may share one model: each re-applies its profile (no encoding) when
    another one set the model's prototypes or references in between.
    """

    def __init__(self, profile: Profile, model: WinCLIP, *, min_area: int = 0) -> None:
        if min_area < 0:
            raise ValueError(f"min_area must be >= 0, got {min_area}")
        self.profile = profile
        self.model = model
        self.min_area = int(min_area)
        self._bind()

    def _bind(self) -> None:
        self.profile.apply(self.model)
        self._state = (self.model.prototypes_, self.model.memory_)

    def _ensure_bound(self) -> None:
        prototypes, memory = self._state
        if self.model.prototypes_ is not prototypes or self.model.memory_ is not memory:
            self._bind()

    def decide(self, index: int, source: str, score: float, zero_shot: float, score_map: np.ndarray) -> Inspection:
        """ROI, label, confidence and regions for one model result (pure given the profile)."""
        p = self.profile
        final, masked = apply_roi(score, score_map.astype(np.float32, copy=False), p.roi)
        return Inspection(
            index=index,
            source=source,
            score=final,
            model_score=score,
            zero_shot=zero_shot,
            label=label_of(final, p.threshold, p.review_threshold),
            confidence=confidence(final, p.threshold, p.confidence_scale),
            regions=find_regions(masked, p.threshold, self.min_area),
            map=masked,
        )

    def iter_inspect(
        self, images: Sequence[ImageInput], *, batch_size: int | None = None, progress: bool = False
    ) -> Iterator[Inspection]:
        """Stream inspections in input order; a bad input yields its error and the rest go on."""
        self._ensure_bound()
        for r in self.model.iter_predict(images, batch_size=batch_size, progress=progress):
            if r.error is not None:
                yield Inspection(r.index, r.source, error=r.error)
            else:
                yield self.decide(r.index, r.source, r.score, r.zero_shot, r.map.numpy())

    def inspect(self, images: Sequence[ImageInput], *, batch_size: int | None = None) -> list[Inspection]:
        """One batch of images → one Inspection each."""
        return list(self.iter_inspect(images, batch_size=batch_size))
