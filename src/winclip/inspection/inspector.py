"""Running images through a profile: `Inspector(profile, model)` streams `Inspection` results.

Each `Inspection` has `index`, `source`, the decoded `image`, and either `error`
(`ImageError`) or: `score` (final image score, ROI applied), `model_score`, `zero_shot`,
`label` ("normal" / "review" / "anomalous"), `confidence`, `regions` (tuple of `Region`),
`map` (float32 `(H, W)` numpy array at the image's own size, ROI applied), `note` (why an
anomalous label has no region, else ""), and the `threshold`, `review_threshold` and
`confidence_scale` the decision was made at (winclip.inspection.decisions).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..images import ImageError, ImageInput
from ..model import WinCLIP
from .decisions import Region, apply_roi, confidence, find_regions, label_of, region_note
from .profile import Profile


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
    threshold: float | None = None
    review_threshold: float | None = None
    confidence_scale: float | None = None
    note: str = ""
    image: Image.Image | None = None
    error: ImageError | None = None


def decide(
    profile: Profile,
    index: int,
    source: str,
    score: float,
    zero_shot: float,
    score_map: np.ndarray,
    *,
    min_area: int = 0,
    image: Image.Image | None = None,
) -> Inspection:
    """ROI, label, confidence and regions of one model result under a profile's thresholds (pure)."""
    final, masked = apply_roi(score, score_map.astype(np.float32, copy=False), profile.roi)
    label = label_of(final, profile.threshold, profile.review_threshold)
    regions = find_regions(masked, profile.threshold, min_area)
    return Inspection(
        index=index,
        source=source,
        score=final,
        model_score=score,
        zero_shot=zero_shot,
        label=label,
        confidence=confidence(final, profile.threshold, profile.confidence_scale),
        regions=regions,
        map=masked,
        threshold=profile.threshold,
        review_threshold=profile.review_threshold,
        confidence_scale=profile.confidence_scale,
        note=region_note(label, regions, float(masked.max(initial=0.0)), profile.threshold, min_area),
        image=image,
    )


class Inspector:
    """A profile bound to its own configuration of a model's backbone: streams images to `Inspection`s.

    The inspector configures a new WinCLIP on `model`'s backbone (`profile.bind`), so any
    number of inspectors share one loaded backbone without touching each other's state.
    """

    def __init__(self, profile: Profile, model: WinCLIP, *, min_area: int = 0) -> None:
        if min_area < 0:
            raise ValueError(f"min_area must be >= 0, got {min_area}")
        self.profile = profile
        self.model = profile.bind(model)
        self.min_area = int(min_area)

    def iter_inspect(
        self, images: Sequence[ImageInput], *, batch_size: int | None = None, progress: bool = False
    ) -> Iterator[Inspection]:
        """Stream inspections in input order; a bad input yields its error and the rest go on."""
        profile = self.profile  # one snapshot of the thresholds for the whole stream
        for r in self.model.iter_predict(images, batch_size=batch_size, progress=progress):
            if r.error is not None:
                yield Inspection(r.index, r.source, error=r.error)
            else:
                assert r.score is not None and r.zero_shot is not None and r.map is not None  # no error: scored
                yield decide(
                    profile,
                    r.index,
                    r.source,
                    r.score,
                    r.zero_shot,
                    r.map.numpy(),
                    min_area=self.min_area,
                    image=r.image,
                )

    def inspect(self, images: Sequence[ImageInput], *, batch_size: int | None = None) -> list[Inspection]:
        """One batch of images → one Inspection each."""
        return list(self.iter_inspect(images, batch_size=batch_size))
