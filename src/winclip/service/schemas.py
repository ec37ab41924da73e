"""Every request and response shape of the HTTP API (pydantic), and the converters from library objects."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pydantic import BaseModel, model_validator

from ..inspection.decisions import Region
from .db import Record
from .station import Scored, Served


class Detail(BaseModel):
    """Every error: one line."""

    detail: str


class Thresholds(BaseModel):
    """New thresholds for a profile: a field left out keeps its value; `review_threshold: null` removes the review
    band. At least one of the two."""

    threshold: float | None = None
    review_threshold: float | None = None

    @model_validator(mode="after")
    def _given(self) -> Thresholds:
        if "threshold" in self.model_fields_set and self.threshold is None:
            raise ValueError("threshold: must be a number (null is only for review_threshold)")
        if not self.model_fields_set & {"threshold", "review_threshold"}:
            raise ValueError("give threshold and/or review_threshold")
        return self


class Reference(BaseModel):
    name: str
    sha256: str
    url: str | None  # null when the service did not store the photo


class CalibrationOut(BaseModel):
    target_fpr: float
    review_fpr: float | None
    threshold: float
    review_threshold: float | None
    fpr: float
    recall: float | None
    f1_threshold: float | None
    f1: float | None
    good: list[float]  # scores of the held-out good images
    bad: list[float]


class Roi(BaseModel):
    width: int
    height: int
    inside: float  # fraction of the pixels inside the ROI


class ProfileOut(BaseModel):
    """A served profile (calibration scores included for the page's histogram)."""

    name: str
    object_name: str
    object_phrase: str
    normal_states: list[str]
    anomalous_states: list[str]
    backbone: str
    pretrained: str | None
    weights_id: str
    options: dict
    shots: int
    references: list[Reference]
    roi: Roi | None
    threshold: float
    review_threshold: float | None
    confidence_scale: float
    calibration: CalibrationOut | None
    digest: str
    revision: int  # increases with every change through any replica; the PATCH's If-Match / the ETag
    created: str
    version: str

    @classmethod
    def of(cls, served: Served) -> ProfileOut:
        p = served.profile
        cal = p.calibration
        calibration = None
        if cal is not None:
            fields = (
                "target_fpr",
                "review_fpr",
                "threshold",
                "review_threshold",
                "fpr",
                "recall",
                "f1_threshold",
                "f1",
            )
            calibration = CalibrationOut(
                **{k: getattr(cal, k) for k in fields}, good=[c.score for c in cal.good], bad=[c.score for c in cal.bad]
            )
        references = [
            Reference(
                name=Path(name).name,
                sha256=sha,
                url=f"/v1/profiles/{served.name}/references/{i}" if served.reference_file(i) else None,
            )
            for i, (name, sha) in enumerate(zip(p.reference_names, p.reference_hashes, strict=True))
        ]
        roi = None if p.roi is None else Roi(width=p.roi.shape[1], height=p.roi.shape[0], inside=float(p.roi.mean()))
        return cls(
            name=served.name,
            object_name=p.object_name,
            object_phrase=p.object_phrase,
            normal_states=list(p.normal_states),
            anomalous_states=list(p.anomalous_states),
            backbone=p.backbone,
            pretrained=p.pretrained,
            weights_id=p.weights_id,
            options=dataclasses.asdict(p.options),
            shots=p.shots,
            references=references,
            roi=roi,
            threshold=p.threshold,
            review_threshold=p.review_threshold,
            confidence_scale=p.confidence_scale,
            calibration=calibration,
            digest=served.digest,
            revision=served.revision,
            created=p.created,
            version=p.version,
        )


class ProfileList(BaseModel):
    profiles: list[ProfileOut]
    refused: dict[str, str]  # name → why it is not served


class PredictResult(BaseModel):
    """One inspected image; `mask`, `overlay` and `map` (base64 PNGs) only when asked for with `include`."""

    id: int  # its row in the record (GET /v1/inspections)
    filename: str
    sha256: str
    width: int
    height: int
    score: float
    model_score: float
    zero_shot: float
    threshold: float  # the profile's thresholds this answer was decided and drawn at (one snapshot)
    review_threshold: float | None
    confidence_scale: float  # confidence = 1 / (1 + exp(-(score - threshold) / confidence_scale))
    label: str
    confidence: float
    regions: list[Region]
    mask: str | None = None
    overlay: str | None = None
    map: str | None = None

    @classmethod
    def of(cls, filename: str, sha256: str, scored: Scored, pictures: dict[str, str]) -> PredictResult:
        """An answer from one recorded Inspection: every field of the same snapshot of the profile."""
        r = scored.inspection
        assert r.map is not None and r.label is not None and r.confidence_scale is not None  # recorded: decided
        assert r.score is not None and r.model_score is not None and r.zero_shot is not None
        assert r.threshold is not None and r.confidence is not None
        return cls(
            id=scored.record_id,
            filename=filename,
            sha256=sha256,
            width=r.map.shape[1],
            height=r.map.shape[0],
            score=r.score,
            model_score=r.model_score,
            zero_shot=r.zero_shot,
            threshold=r.threshold,
            review_threshold=r.review_threshold,
            confidence_scale=r.confidence_scale,
            label=r.label,
            confidence=r.confidence,
            regions=list(r.regions),
            **pictures,
        )


class PredictOut(BaseModel):
    profile: str
    results: list[PredictResult]


class Batching(BaseModel):
    batches: int
    images: int
    largest: int


class Ready(BaseModel):
    status: str
    version: str
    backbone: str
    weights_id: str
    random_weights: bool  # --pretrained none: every score is meaningless (the page shows a banner)
    device: str
    precision: str
    database: str
    profiles: list[str]
    refused: dict[str, str]
    batching: Batching


class InspectionRow(Record, frozen=True):
    """A recorded inspection as the API returns it: with its id, the time in ISO 8601 (UTC)."""

    id: int
    time: str  # type: ignore[assignment]  # the API's ISO 8601 text where the record holds a datetime


class InspectionPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[InspectionRow]
