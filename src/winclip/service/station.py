"""The inspection station's model side: one warm backbone, the profiles of a folder, batched scoring.

Every method that touches the model (`load`, `predict_batch`, `create_steps`, `set_thresholds`,
`refresh`) runs on the batcher's worker thread, so the model has exactly one user. The event loop only
reads `profiles` and `refused`, dicts whose entries are replaced whole (never mutated).
`create_steps` is a generator the worker runs a step at a time (Batcher.steps): it encodes
the prompts `TEXT_STEP` at a time and the references a batch at a time, so predictions keep
flowing while a profile with many prompts is made.

Each answer is made from one snapshot of its profile: a batch takes `profiles[name]` once, and
the label, confidence, regions, pictures and the database row all come from the `Inspection`
it yields, which carries the thresholds it was decided at.

The serve options (backbone, weights, device, precision, batch size) build one `WinCLIP`
(winclip.build_model). Each served profile gets its own `Inspector`, a configuration of that
one backbone with the profile's options, prototypes and references (`Profile.bind`), so
profiles never touch each other's state. A profile made with another backbone or checkpoint
is refused with the profile's own message (`ProfileMismatchError`), and the others are served.

Replicas (winclip.service.revisions): every served profile carries the revision it was loaded
at. Loading registers each profile (a folder changed on disk outside the service becomes a new
revision); creating one and changing its thresholds happen under the profile's row lock, on
top of the stored revision; `refresh` loads the profiles that another replica created or
changed (winclip.service.sync polls for them).
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

import numpy as np
import sqlalchemy as sa
import torch
from PIL import Image

from ..backbones.openclip import RandomWeightsWarning
from ..inspection.inspector import Inspection, Inspector
from ..inspection.precision_check import evidence_note, shared_spec
from ..inspection.profile import Profile
from ..inspection.references import References
from ..inspection.store import PROFILE_JSON
from ..method.prompts import object_phrase
from ..method.zero_shot import prototype
from ..model import WinCLIP, banner, build_model
from ..options import ModelSpec
from .db import DatabaseUnavailableError, Record, Recorder, one_line
from .metrics import Metrics
from .names import MEDIA_TYPES, NAME_PATTERN, check_name, reference_filename
from .revisions import Revision, Revisions

REFERENCES_DIR = "references"
TEXT_STEP = 64  # prompts encoded per step of the worker when a profile is created


class UnknownProfileError(KeyError):
    """No served profile has this name."""

    def __str__(self) -> str:
        return str(self.args[0])


class ProfileConflictError(ValueError):
    """A profile with this name exists already."""


class PreconditionFailedError(ValueError):
    """`If-Match` named another revision than the stored one (HTTP 412)."""


class InspectionError(RuntimeError):
    """A served profile failed on an image (HTTP 500 for that image only)."""


class RecordingError(DatabaseUnavailableError):
    """The predictions were made but could not be written to the database (HTTP 503: nothing is answered 200)."""


@contextmanager
def revision_errors() -> Iterator[None]:
    """The database's errors while changing a profile's revision, as DatabaseUnavailableError (HTTP 503)."""
    try:
        yield
    except sa.exc.SQLAlchemyError as exc:
        raise DatabaseUnavailableError(f"the profile's revision cannot be written: {one_line(exc)}") from None


@dataclass(frozen=True)
class PredictItem:
    """One decoded upload to score with a profile."""

    profile: str
    image: Image.Image
    filename: str
    sha256: str
    received: float  # time.perf_counter() when the request arrived


@dataclass(frozen=True)
class Scored:
    """One image's inspection, as recorded."""

    inspection: Inspection
    record_id: int  # its row's id
    time: datetime  # its row's time (UTC)


@dataclass(frozen=True)
class ThresholdChange:
    """New thresholds: None keeps the stored value; `clear_review` removes the review band; `if_match` (a
    revision) refuses the change unless the profile is still at that revision."""

    threshold: float | None = None
    review: float | None = None
    clear_review: bool = False
    if_match: int | None = None

    def apply(self, profile: Profile) -> Profile:
        """The profile with these thresholds (ValueError when they are invalid)."""
        review = None if self.clear_review else profile.review_threshold if self.review is None else self.review
        return profile.with_thresholds(profile.threshold if self.threshold is None else self.threshold, review)


@dataclass(frozen=True)
class Served:
    """A loaded profile, its folder, digest and revision, and the inspector that runs it."""

    name: str
    profile: Profile
    folder: Path
    inspector: Inspector
    digest: str
    revision: int
    evidence: str = ""  # what the profile's precision evidence says of the path the station scores it through

    @classmethod
    def of(cls, name: str, profile: Profile, folder: Path, model: WinCLIP, min_area: int, revision: int) -> Served:
        """Bind `profile` to its own configuration of `model`'s backbone."""
        inspector = Inspector(profile, model, min_area=min_area)
        return cls(name, profile, folder, inspector, profile.digest(), revision, evidence_note(profile, inspector.path))

    def reference_file(self, index: int) -> Path | None:
        """Reference image `index` when the service saved it inside the profile folder with an image
        extension (served as that image type), else None."""
        if not 0 <= index < len(self.profile.reference_names):
            return None
        path = Path(self.profile.reference_names[index]).resolve()
        inside = path.parent == (self.folder / REFERENCES_DIR).resolve()
        return path if inside and path.suffix in MEDIA_TYPES and path.is_file() else None


class Station:
    """The model and the profiles of one folder; see the module docstring."""

    def __init__(
        self,
        folder: str | Path,
        spec: ModelSpec,
        recorder: Recorder,
        *,
        metrics: Metrics,
        batch_size: int,
        min_area: int = 0,
        reserved: frozenset[str] = frozenset(),
        on_recorded: Callable[[Served, Record, int], None] | None = None,
        log: TextIO = sys.stderr,
    ) -> None:
        self.folder = Path(folder)
        self.on_recorded = on_recorded  # called with each recorded result (winclip.line.publish), on the worker
        self.spec = spec
        self.batch_size = batch_size
        self.recorder = recorder
        self.revisions = Revisions(recorder)
        self.metrics = metrics
        self.min_area = int(min_area)
        self.reserved = reserved  # names of the service's own files in the folder (winclip.service.names)
        self.log = log
        self.base: WinCLIP | None = None
        self.profiles: dict[str, Served] = {}
        self.refused: dict[str, str] = {}
        self.passed: dict[str, Revision] = {}  # revisions `refresh` could not serve: not tried again

    # -- loading (worker thread) -----------------------------------------------------------

    def load(self) -> dict[str, int]:
        """Build the model (banner and random-weights warning to the log), load and warm every profile."""
        self.folder.mkdir(parents=True, exist_ok=True)
        # every folder with an entry named profile.json: a FIFO, a device or a link loop there is refused, not skipped
        # (a hidden one is a save in progress or killed: profile_store)
        found = sorted(p for p in self.folder.iterdir() if os.path.lexists(p / PROFILE_JSON) and p.is_dir())
        folders = [p for p in found if not p.name.startswith(".")]
        self.spec = shared_spec(folders, self.spec)  # auto: the path their evidence agrees on
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomWeightsWarning)  # the banner says it louder
            self.base = build_model(self.spec, batch_size=self.batch_size)
        print(banner(self.base), file=self.log)
        for folder in folders:
            self._load_one(folder)
        return {"profiles": len(self.profiles), "refused": len(self.refused)}

    def _load_one(self, folder: Path) -> None:
        """Load, register (under the profile's row lock, so the folder read is the stored revision's) and warm."""
        name = folder.name
        stored = None
        try:
            check_name(name, self.reserved)
            with self.revisions.locked(name) as row:
                profile = Profile.load(folder)
                digest = profile.digest()
                stored = row.stored if row.stored and row.stored.digest == digest else row.write(digest)
            assert self.base is not None  # load() built it first
            served = Served.of(name, profile, folder, self.base, self.min_area, stored.revision)
            self._warm(served)
        except Exception as exc:  # noqa: BLE001 - one profile's failure (torch's included) refuses it alone
            self._refuse(name, _why(exc))
            if stored is not None:
                self.passed[name] = stored  # registered, but this replica cannot serve it: refresh skips it
            return
        self._serve(served)
        print(
            f"winclip serve: profile {name!r} ready ({profile.object_name}, {profile.shots} shot(s), revision "
            f"{served.revision}{'' if row.written is None else ', registered now'})",
            file=self.log,
        )

    def _refuse(self, name: str, why: str) -> None:
        self.refused = {**self.refused, name: why}
        print(f"winclip serve: refused profile {name!r}: {why}", file=self.log)

    def _serve(self, served: Served) -> None:
        """Serve (or replace) a profile: the dicts are replaced whole, never mutated (module docstring)."""
        self.profiles = {**self.profiles, served.name: served}
        self.refused = {k: v for k, v in self.refused.items() if k != served.name}
        self.metrics.revision.labels(served.name).set(served.revision)

    def _warm(self, served: Served) -> None:
        """One inspection of a grey image: allocates buffers and proves the profile runs."""
        h, w = served.profile.image_size
        (result,) = served.inspector.inspect([Image.new("RGB", (w, h), (128, 128, 128))])
        if result.error is not None:
            raise ValueError(f"warm-up failed: {result.error}")

    # -- prediction (worker thread) --------------------------------------------------------

    def predict_batch(self, items: Sequence[PredictItem]) -> list[Scored | BaseException]:
        """Score a batch, grouped by profile; record every result in one transaction. A profile that fails, or a
        result that is not finite, fails only its own images (InspectionError), never another profile's."""
        self.metrics.batch_size.observe(len(items))
        results: list[Inspection | BaseException] = [
            UnknownProfileError(f"profile {it.profile!r} not found") for it in items
        ]
        groups: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(item.profile, []).append(i)
        serving: dict[str, Served] = {}
        for name, indices in groups.items():
            served = self.profiles.get(name)
            if served is not None:
                serving[name] = served
                self._inspect(served, [(i, items[i]) for i in indices], results)
        now = datetime.now(timezone.utc)
        done = [(i, r) for i, r in enumerate(results) if isinstance(r, Inspection)]
        records = [Record.of(now, items[i].profile, (items[i].filename, items[i].sha256, items[i].received), r)
                   for i, r in done]  # fmt: skip
        served_by = [serving[items[i].profile] for i, _ in done]
        try:
            ids = self.recorder.record(records)
        except Exception as exc:  # noqa: BLE001 - the database's own error types vary by driver
            failure = RecordingError(f"the inspections were not recorded, so none is answered: {one_line(exc)}")
            print(f"winclip serve: {len(records)} inspection(s) refused (503): {failure}", file=self.log)
            self.metrics.not_recorded.inc(len(records))
            return [failure if isinstance(r, Inspection) else r for r in results]
        for record in records:
            self.metrics.images.labels(record.profile, record.label).inc()
        if self.on_recorded is not None:
            for owner, record, record_id in zip(served_by, records, ids, strict=True):
                self.on_recorded(owner, record, record_id)
        row_ids = iter(ids)
        return [Scored(r, next(row_ids), now) if isinstance(r, Inspection) else r for r in results]

    def _inspect(self, served: Served, items: list[tuple[int, PredictItem]], results: list) -> None:
        """One profile's images of a batch into `results` (by index): each its Inspection or its own error."""
        try:
            inspected = served.inspector.inspect([item.image for _, item in items])
        except Exception as exc:  # noqa: BLE001 - this profile's images fail, the batch goes on
            failure = InspectionError(f"profile {served.name!r} could not inspect the image: {_why(exc)}")
            print(f"winclip serve: {len(items)} image(s) not inspected: {failure}", file=self.log)
            for i, _ in items:
                results[i] = failure
            return
        for (i, item), r in zip(items, inspected, strict=True):
            numbers = (r.score, r.model_score, r.zero_shot, r.confidence, *(g.peak for g in r.regions))
            if r.error is None and not all(x is not None and math.isfinite(x) for x in numbers):
                results[i] = InspectionError(
                    f"{item.filename}: profile {served.name!r} gave a score that is not a number"
                )
                continue
            results[i] = r if r.error is None else r.error

    # -- changing profiles (worker thread) -------------------------------------------------

    def create_steps(
        self,
        name: str,
        object_name: str,
        good: Sequence[tuple[str, bytes, str]],
        *,
        normal_states: Sequence[str] = (),
        anomalous_states: Sequence[str] = (),
        roi: Image.Image | None = None,
        threshold: float = 0.5,
    ) -> Generator[None, None, Served]:
        """Save the good images (name, bytes, extension of the decoded format) under `<name>/references/`,
        encode prompts and references a step at a time (a generator for Batcher.steps), write and serve the profile."""
        assert self.base is not None
        check_name(name, self.reserved)
        folder = self.folder / name
        try:
            folder.mkdir()
        except FileExistsError:
            raise ProfileConflictError(f"profile {name!r} exists already") from None
        try:
            model = self.base.with_options()
            text = model.text_encoder()
            prompt_set = model.prompts.extended(normal_states, anomalous_states)
            prototypes = []
            for texts in prompt_set.prompts(object_phrase(object_name)):
                parts = []
                for start in range(0, len(texts), TEXT_STEP):
                    parts.append(text.encode(texts[start : start + TEXT_STEP]))
                    yield
                prototypes.append(prototype(torch.cat(parts)))
            refs = folder / REFERENCES_DIR
            refs.mkdir()
            paths = []
            for i, (filename, data, extension) in enumerate(good):
                path = refs / reference_filename(i, filename, extension)
                path.write_bytes(data)
                paths.append(str(path))
            encoded = []
            for start in range(0, len(paths), self.batch_size):
                encoded.append(References.encode(model, paths[start : start + self.batch_size]))
                yield
            roi_mask = None if roi is None else np.asarray(roi.convert("L"))
            profile = Profile.assemble(
                model,
                object_name,
                prompt_set,
                (prototypes[0], prototypes[1]),
                References.cat(encoded) if encoded else None,
                roi=roi_mask,
                threshold=threshold,
            )
            with revision_errors(), self.revisions.locked(name) as row:
                profile.save(folder, overwrite=True)
                revision = row.write(profile.digest()).revision
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        served = Served.of(name, profile, folder, self.base, self.min_area, revision)
        self._serve(served)
        print(f"winclip serve: created profile {name!r} ({object_name}, {profile.shots} shot(s))", file=self.log)
        return served

    def set_thresholds(self, name: str, change: ThresholdChange) -> Served:
        """New thresholds for a served profile, applied on top of its stored revision and saved in place, under
        its row lock (PreconditionFailedError when `change.if_match` is not the stored revision)."""
        served = self.get(name)
        with revision_errors(), self.revisions.locked(name) as row:
            if change.if_match is not None and change.if_match != row.revision:
                raise PreconditionFailedError(
                    f"profile {name!r} is at revision {row.revision}, not {change.if_match} (If-Match): it was "
                    "changed meanwhile; read it again and retry"
                )
            stored = row.stored is not None and row.stored == Revision(served.revision, served.digest)
            base = served.profile if stored else Profile.load(served.folder)  # another replica's change
            profile = change.apply(base)
            profile.save(served.folder, overwrite=True)
            revision = row.write(profile.digest()).revision
        assert self.base is not None  # load() built it first
        updated = Served.of(name, profile, served.folder, self.base, self.min_area, revision)
        self._serve(updated)
        return updated

    def refresh(self, current: dict[str, Revision]) -> list[str]:
        """Load the profiles whose stored revision is newer than the one served (created or changed by another
        replica); a new one is warmed first. A folder that does not hold the stored digest yet is tried again
        at the next call; one that cannot be served is refused until its revision moves on."""
        done = []
        for name in self.stale(current):
            served, stored = self.profiles.get(name), current[name]
            try:
                profile = Profile.load(self.folder / check_name(name, self.reserved))
                if profile.digest() != stored.digest:
                    continue  # between two saves, or changed outside the service: the next poll reads it again
                assert self.base is not None  # load() built it first
                fresh = Served.of(name, profile, self.folder / name, self.base, self.min_area, stored.revision)
                if served is None:
                    self._warm(fresh)
            except Exception as exc:  # noqa: BLE001 - as at start-up: this profile alone is refused
                self.passed[name] = stored
                if served is None:
                    self._refuse(name, _why(exc))
                else:
                    print(
                        f"winclip serve: revision {stored.revision} of {name!r} not served: {_why(exc)}", file=self.log
                    )
                continue
            self._serve(fresh)
            self.metrics.reloads.labels(name).inc()
            done.append(name)
            print(f"winclip serve: profile {name!r} loaded at revision {stored.revision}", file=self.log)
        return done

    def stale(self, current: dict[str, Revision]) -> list[str]:
        """The names whose stored revision is newer than the one served, not passed over at that revision, and
        whose folder is here (a missing one may not be visible yet on a shared file system: looked for again)."""
        return [
            name
            for name, stored in sorted(current.items())
            if stored.revision > getattr(self.profiles.get(name), "revision", 0)
            and self.passed.get(name) != stored
            and NAME_PATTERN.fullmatch(name)
            and (self.folder / name / PROFILE_JSON).is_file()
        ]

    def get(self, name: str) -> Served:
        """A served profile by name (UnknownProfileError)."""
        served = self.profiles.get(name)
        if served is None:
            raise UnknownProfileError(f"profile {name!r} not found")
        return served


def _why(exc: Exception) -> str:
    """One line saying why a profile failed."""
    if isinstance(exc, sa.exc.SQLAlchemyError):
        return one_line(exc)
    if isinstance(exc, (ValueError, OSError)):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
