"""Inspection profiles: everything `predict` needs for one product, as one immutable record.

A `Profile` pins the model it was made with and carries everything scoring needs, so loading
one encodes nothing:

- backbone: `backbone` (= `model.info.name`), `pretrained` (tag or file asked for), `weights_id`
  (the identity of the checkpoint actually loaded), `model_config` (the content of the model-config
  `.json` it was built from, None for open_clip's own names: later commands rebuild it from this,
  without the file);
- preprocessing: `image_size`, `mean`, `std`, and every method option in `options`
  (`MethodOptions`, all of its fields);
- prompts: `object_name`, `object_phrase`, `normal_states`, `anomalous_states`, `templates`
  (the full lists used) and the two text `prototypes` `(D,)`;
- references: `references` = the raw `Features` of every reference view (K views for
  `resize="squash"`, more with tiles; `None` = zero-shot), `reference_views` (views per
  reference image), `reference_names`, `reference_hashes` (sha256 of the file, or of the
  decoded RGB pixels for in-memory images);
- decision: `roi` (bool `(H, W)` or None), `threshold`, `review_threshold` (None = no review
  band), `confidence_scale`, `calibration` (a `Calibration` or None); `version` of winclip.

API (every method that changes a profile returns a new one):

    profile = Profile.create(model, "screw", good=["a.png", "b.png"], roi=None)   # encodes the refs
    profile = Profile.assemble(model, "screw", prompt_set, prototypes, refs)     # from parts encoded already
    profile.save("screw.winclip")                  # folder: profile.json + tensors.safetensors [+ roi.png],
                                                   #   swapped in atomically (winclip.inspection.store)
    profile = Profile.load("screw.winclip")        # json + safetensors only: no pickle, no encoding; checked
                                                   #   for consistency and ranges (winclip.inspection.checks)
    model = profile.bind(model)                    # a WinCLIP on model's backbone with this profile's
                                                   #   options, prototypes and references
    profile = profile.calibrate(model, good=[...], bad=[...], target_fpr=0.01, review_fpr=0.05)
    profile = profile.add_good(model, ["false_alarm.png"])  # encodes ONLY the new images; recalibrates
    profile = profile.with_thresholds(0.7, review=0.6)
    profile.digest()                               # "sha256:..." of the content (provenance)

Decisions (labels, confidence, ROI, regions) are in winclip.inspection.decisions, calibration in
winclip.inspection.calibration, running images through a profile in winclip.inspection.inspector.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..backbones import BackboneInfo
from ..images import ImageInput, file_sha256
from ..method.features import Features
from ..method.prompts import PromptSet, object_phrase
from ..model import WinCLIP
from ..options import MethodOptions
from ..progress import plural
from .calibration import Calibration, CalibrationImage, calibrate, check_rates, robust_scale
from .checks import check_decision
from .decisions import DEFAULT_CONFIDENCE_SCALE, DEFAULT_THRESHOLD, apply_roi
from .references import References, image_digest, roi_array
from .show import content_digest, read_checked, summary
from .store import FORMAT, FORMAT_VERSION, ROI_FILE, write_folder


class CalibrationChangedWarning(UserWarning):
    """Stored calibration images changed on disk since calibration; they are re-scored as they are now."""


class ProfileMismatchError(ValueError):
    """The loaded model is not the one a profile was made with."""


@dataclass(frozen=True, eq=False)
class Profile:
    """One inspection task: model identity, prompts, prototypes, references, ROI and thresholds."""

    backbone: str
    pretrained: str | None
    weights_id: str
    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    options: MethodOptions
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
    model_config: str | None = None  # canonical JSON of the model-config file the backbone was built from

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
        refs = References.encode(model, good) if len(good) else None
        assert model.prototypes_ is not None  # set_object above
        return cls.assemble(model, object_name, prompt_set, model.prototypes_, refs, roi=roi, threshold=threshold)

    @classmethod
    def assemble(
        cls,
        model: WinCLIP,
        object_name: str,
        prompt_set: PromptSet,
        prototypes: tuple[torch.Tensor, torch.Tensor],
        refs: References | None,
        *,
        roi: ImageInput | np.ndarray | None = None,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> Profile:
        """A profile from prototypes and references already encoded with `model` (which is left fitted to them)."""
        info = model.info
        profile = cls(
            backbone=info.name,
            pretrained=info.pretrained,
            weights_id=info.weights_id,
            image_size=info.image_size,
            mean=info.mean,
            std=info.std,
            options=model.options,
            object_name=object_name,
            object_phrase=object_phrase(object_name),
            normal_states=prompt_set.normal_states,
            anomalous_states=prompt_set.anomalous_states,
            templates=prompt_set.templates,
            prototypes=(prototypes[0].detach().cpu().clone(), prototypes[1].detach().cpu().clone()),
            references=refs.features if refs else None,
            reference_views=refs.views if refs else (),
            reference_names=refs.names if refs else (),
            reference_hashes=refs.hashes if refs else (),
            roi=roi_array(roi),
            threshold=float(threshold),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            model_config=info.model_config,
        )
        profile._check_thresholds()
        profile.apply(model)
        return profile

    def __repr__(self) -> str:
        return (
            f"Profile(object={self.object_name!r}, backbone={self.backbone!r}, pretrained={self.pretrained!r}, "
            f"shots={self.shots}, threshold={self.threshold:.6g}, review_threshold={self.review_threshold!r}, "
            f"calibrated={self.calibration is not None})"
        )

    @property
    def shots(self) -> int:
        """Number of reference images (0 = zero-shot)."""
        return len(self.reference_names)

    def _check_thresholds(self) -> None:
        check_decision(self.threshold, self.review_threshold, self.confidence_scale)

    def with_thresholds(self, threshold: float, review: float | None = None) -> Profile:
        """The same profile with other thresholds (checked)."""
        new = dataclasses.replace(
            self, threshold=float(threshold), review_threshold=None if review is None else float(review)
        )
        new._check_thresholds()
        return new

    # -- binding to a model --------------------------------------------------------------

    def check_backbone(self, info: BackboneInfo) -> None:
        """Raise ProfileMismatchError unless the backbone has this profile's weights and preprocessing."""
        there = f"{info.name} ({info.weights_id})"
        if info.name != self.backbone or info.weights_id != self.weights_id:
            raise ProfileMismatchError(
                f"the profile was made with {self.backbone} ({self.weights_id}) but the loaded model is {there}; load "
                f"the same backbone and checkpoint (--backbone {self.backbone} "
                f"--pretrained {self.pretrained or 'none'})"
            )
        if self.model_config and info.model_config and info.model_config != self.model_config:
            raise ProfileMismatchError(
                f"the profile's model config of {self.backbone} differs from the one loaded; leave --backbone out to "
                "use the profile's own"
            )
        if (tuple(info.image_size), tuple(info.mean), tuple(info.std)) != (self.image_size, self.mean, self.std):
            raise ProfileMismatchError(f"the profile's preprocessing differs from the loaded model {there}")

    def check(self, model: WinCLIP) -> None:
        """Raise ProfileMismatchError unless `model` has this profile's backbone, weights and options."""
        self.check_backbone(model.info)
        if model.options != self.options:
            raise ProfileMismatchError(
                f"the profile was made with options {self.options} but the model has {model.options}"
            )

    def apply(self, model: WinCLIP) -> WinCLIP:
        """Check `model`, then give it this profile's prototypes and references (no encoding)."""
        self.check(model)
        model.set_prototypes(*self.prototypes)
        if self.references is None:
            return model.fit(None)
        return model.fit_features(self.references.to(model.device))

    def bind(self, model: WinCLIP) -> WinCLIP:
        """A new WinCLIP on `model`'s backbone with this profile's options, prototypes and references."""
        return self.apply(model.with_options(**dataclasses.asdict(self.options)))

    # -- references and calibration ------------------------------------------------------

    def add_good(self, model: WinCLIP, images: Sequence[ImageInput], *, progress: bool = False) -> Profile:
        """Append good images (false alarms) to the references, encoding only them; recalibrate if calibrated."""
        if not len(images):
            raise ValueError("add_good needs at least one image")
        bound = self.bind(model)
        new = References.encode(bound, images)
        refs = new.features if self.references is None else Features.cat([self.references, new.features])
        profile = dataclasses.replace(
            self,
            references=refs,
            reference_views=self.reference_views + new.views,
            reference_names=self.reference_names + new.names,
            reference_hashes=self.reference_hashes + new.hashes,
        )
        cal = self.calibration
        if cal is None:
            return profile
        changed = [c.name for c in (*cal.good, *cal.bad) if Path(c.name).is_file() and file_sha256(c.name) != c.sha256]
        if changed:
            warnings.warn(
                f"{plural(len(changed), 'calibration image')} changed on disk since calibration; re-scored as found "
                f"now: {', '.join(changed[:5])}{', ...' if len(changed) > 5 else ''}",
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
        """Score held-out images with this profile (ROI applied); thresholds from the good scores (calibration.py)."""
        check_rates(target_fpr, review_fpr)
        bound = self.bind(model)
        scored: dict[str, list[CalibrationImage]] = {"good": [], "bad": []}
        skipped: list[tuple[str, str, str]] = []
        for kind, images in (("good", good), ("bad", bad)):
            images = [str(Path(x).resolve()) if isinstance(x, (str, Path)) else x for x in images]
            for r in bound.iter_predict(images, batch_size=batch_size, progress=progress):
                if r.error is not None:
                    skipped.append((kind, r.source, r.error.reason))
                    continue
                assert r.score is not None and r.map is not None  # no error: scored
                score, _ = apply_roi(r.score, r.map.numpy(), self.roi)
                scored[kind].append(CalibrationImage(r.source, image_digest(images[r.index], r.image), score))
        calibration = calibrate(scored["good"], scored["bad"], skipped, target_fpr, review_fpr)
        return dataclasses.replace(
            self,
            threshold=calibration.threshold,
            review_threshold=calibration.review_threshold,
            confidence_scale=robust_scale(np.array([c.score for c in calibration.good])),
            calibration=calibration,
        )

    # -- the one JSON form and its tensors -------------------------------------------------

    def to_json(self) -> dict:
        """profile.json's content: everything but the tensors and the ROI pixels (a model config only when given)."""
        config = {} if self.model_config is None else {"model_config": json.loads(self.model_config)}
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "version": self.version,
            "created": self.created,
            "backbone": self.backbone,
            "pretrained": self.pretrained,
            "weights_id": self.weights_id,
            "preprocess": {
                "image_size": list(self.image_size),
                "mean": list(self.mean),
                "std": list(self.std),
                "resize": self.options.resize,
            },
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
                for n, h, v in zip(self.reference_names, self.reference_hashes, self.reference_views, strict=True)
            ],
            "roi": None
            if self.roi is None
            else {"file": ROI_FILE, "height": self.roi.shape[0], "width": self.roi.shape[1]},
            "threshold": self.threshold,
            "review_threshold": self.review_threshold,
            "confidence_scale": self.confidence_scale,
            "calibration": None if self.calibration is None else dataclasses.asdict(self.calibration),
            **config,
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        """The prototypes and the reference features as named fp32 CPU tensors."""
        out = {"prototype.normal": self.prototypes[0], "prototype.anomalous": self.prototypes[1]}
        out = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in out.items()}
        if self.references is not None:
            out.update(self.references.to_tensors("reference."))
        return out

    @classmethod
    def from_json(
        cls, meta: dict, tensors: dict[str, np.ndarray] | dict[str, torch.Tensor], roi: np.ndarray | None
    ) -> Profile:
        """The inverse of `to_json` and `tensors` (KeyError/TypeError/ValueError on malformed input)."""
        cal = None if meta["calibration"] is None else Calibration.from_json(meta["calibration"])
        p, pre, refs = meta["prompts"], meta["preprocess"], meta["references"]
        return cls(
            backbone=meta["backbone"],
            pretrained=meta["pretrained"],
            weights_id=meta["weights_id"],
            image_size=tuple(pre["image_size"]),
            mean=tuple(pre["mean"]),
            std=tuple(pre["std"]),
            options=MethodOptions(**meta["options"]),
            object_name=p["object_name"],
            object_phrase=p["object_phrase"],
            normal_states=tuple(p["normal_states"]),
            anomalous_states=tuple(p["anomalous_states"]),
            templates=tuple(p["templates"]),
            prototypes=(torch.as_tensor(tensors["prototype.normal"]), torch.as_tensor(tensors["prototype.anomalous"])),
            references=Features.from_tensors({k: torch.as_tensor(v) for k, v in tensors.items()}, "reference."),
            reference_views=tuple(r["views"] for r in refs),
            reference_names=tuple(r["name"] for r in refs),
            reference_hashes=tuple(r["sha256"] for r in refs),
            roi=roi,
            threshold=float(meta["threshold"]),
            review_threshold=meta["review_threshold"],
            confidence_scale=float(meta["confidence_scale"]),
            calibration=cal,
            version=meta["version"],
            created=meta["created"],
            model_config=None if meta.get("model_config") is None else json.dumps(meta["model_config"], sort_keys=True),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """`tensors()` as numpy arrays (what a profile folder holds)."""
        return {k: v.numpy() for k, v in self.tensors().items()}

    def digest(self) -> str:
        """`sha256:<hex>` of the content (metadata but its creation time, tensors, ROI): its identity in provenance."""
        return content_digest(self.to_json(), self.arrays(), self.roi)

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the folder `path` (profile.json, tensors.safetensors, roi.png); refuses to overwrite unless asked."""
        return write_folder(Path(path), self.to_json(), self.tensors(), self.roi, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        """Read a profile folder: JSON and safetensors only (nothing is unpickled, executed or encoded); one-line
        ValueError naming the folder and the first inconsistent, non-finite or out-of-range part (profile_checks)."""
        folder = Path(path)
        meta, tensors, roi = read_checked(folder)
        try:
            return cls.from_json(meta, tensors, roi)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{folder}: malformed profile ({type(exc).__name__}: {exc})") from None

    def summary(self) -> str:
        """A few lines describing the profile (what `winclip profile show` prints, winclip.inspection.show)."""
        return summary(self.to_json(), self.arrays(), self.roi)
