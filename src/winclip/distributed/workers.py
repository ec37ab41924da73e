"""What runs inside the Ray actors: the model (and the profile's inspector) built once per actor.

Plain classes: `WorkerPool` makes them Ray actors. Everything crossing the wire is plain data
(dataclasses of strings, numbers and bytes; profiles and features as safetensors bytes), and
an actor that cannot start says why in `ready()` instead of raising, so the driver prints one line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from .. import __version__
from ..inspection.folder_run import InputImage, Outcome, header_record, inspect_items
from ..inspection.inspector import Inspector
from ..inspection.profile import Profile
from ..method.features import Features
from ..model import WinCLIP, build_model
from ..options import MethodOptions, ModelSpec
from ..paper.feature_cache import Encoded, FeatureCache, encode_files, feature_settings
from ..progress import NoProgress
from .pool import worker_identity

STARTUP_ERRORS = (ValueError, OSError, RuntimeError, ImportError)  # a worker that cannot start reports these


@dataclass(frozen=True)
class ModelJob:
    """What every worker builds its model from: the weights, the method options, the batch, torch threads."""

    spec: ModelSpec
    options: MethodOptions
    batch_size: int
    threads: int

    def build(self) -> WinCLIP:
        torch.set_num_threads(self.threads)
        return build_model(self.spec, self.options, batch_size=self.batch_size)


@dataclass(frozen=True)
class ProfilePayload:
    """A profile as bytes: profile.json's content, the safetensors of its tensors, the ROI's bits."""

    meta: dict
    tensors: bytes
    roi: bytes | None
    roi_shape: tuple[int, int] | None

    @staticmethod
    def pack(profile: Profile) -> ProfilePayload:
        roi = profile.roi
        return ProfilePayload(
            profile.to_json(),
            save_tensors(profile.tensors()),
            None if roi is None else np.packbits(roi).tobytes(),
            None if roi is None else (int(roi.shape[0]), int(roi.shape[1])),
        )

    def unpack(self) -> Profile:
        roi = None
        if self.roi is not None:
            assert self.roi_shape is not None  # pack sets both
            h, w = self.roi_shape
            roi = np.unpackbits(np.frombuffer(self.roi, dtype=np.uint8), count=h * w).reshape(h, w).astype(bool)
        return Profile.from_json(self.meta, load_tensors(self.tensors), roi)


@dataclass(frozen=True)
class Made:
    """A profile created on a worker, or why it could not be."""

    payload: ProfilePayload | None = None
    error: str | None = None


def create_profile(job: ModelJob, object_name: str, good: list[str], roi: str | None) -> Made:
    """`Profile.create` on a worker (for `predict --object --good`): the driver holds no model."""
    try:
        profile = Profile.create(job.build(), object_name, good, roi=roi)
    except STARTUP_ERRORS as err:
        return Made(error=str(err))
    return Made(ProfilePayload.pack(profile))


@dataclass(frozen=True)
class InspectJob:
    """What an inspect worker needs besides its model: the profile, `--min-area`, `--save-maps`, the header's name,
    `--max-megapixels` in pixels."""

    model: ModelJob
    profile: ProfilePayload
    min_area: int
    save_maps: bool
    profile_path: str | None
    max_pixels: int | None


class InspectWorker:
    """A Ray actor running `workflow.inspect_items` on its chunks with an inspector built once."""

    def __init__(self, job: InspectJob) -> None:
        self.job = job
        self.info = {**worker_identity(), "version": __version__}
        try:
            profile = job.profile.unpack()
            self.inspector = Inspector(profile, job.model.build(), min_area=job.min_area)
        except STARTUP_ERRORS as err:
            self.info["error"] = str(err)
            return
        self.info["header"] = header_record(self.inspector, job.profile_path, job.save_maps)

    def ready(self) -> dict:
        """Where it runs, its winclip version and the results header, or the error that stopped it."""
        return self.info

    def inspect(self, items: list[tuple[str, str]]) -> list[Outcome]:
        """(path to read, relative output name) → one outcome per input, in order."""
        inputs = [InputImage(Path(path), PurePosixPath(rel)) for path, rel in items]
        return list(inspect_items(self.inspector, inputs, save_maps=self.job.save_maps, max_pixels=self.job.max_pixels))


class _Collected(FeatureCache):
    """A feature cache that keeps what `encode_files` encodes, to send it back instead of writing it."""

    def __init__(self) -> None:  # no folder: nothing is written
        self.items: dict[str, Encoded] = {}

    def has(self, sha: str) -> bool:
        return sha in self.items

    def save(self, sha: str, item: Encoded) -> None:
        self.items[sha] = item


@dataclass(frozen=True)
class EncodedFile:
    """One file's features (safetensors bytes) and decoded size (H, W), or its decode error."""

    sha: str
    data: bytes | None = None
    size: tuple[int, int] | None = None
    reason: str | None = None

    def encoded(self) -> Encoded:
        """The features as `FeatureCache.save` takes them."""
        assert self.data is not None and self.size is not None  # not a decode error
        features = Features.from_tensors(load_tensors(self.data))
        assert features is not None  # the worker wrote them with _tensor_bytes
        return Encoded(features, self.size)


def _tensor_bytes(features: Features) -> bytes:
    """Features as safetensors bytes (copied out of the batch they were encoded in)."""
    return save_tensors({k: v.clone() for k, v in features.to_tensors().items()})


class EncodeWorker:
    """A Ray actor encoding files for `winclip eval` with a model built once."""

    def __init__(self, job: ModelJob) -> None:
        self.info = {**worker_identity(), "version": __version__}
        try:
            self.model = job.build()
        except STARTUP_ERRORS as err:
            self.info["error"] = str(err)
            return
        self.info["features"] = feature_settings(self.model)

    def ready(self) -> dict:
        """Where it runs, its winclip version and feature settings, or the error that stopped it."""
        return self.info

    def encode(self, files: list[tuple[str, str, bool]]) -> list[EncodedFile]:
        """(path, sha, with crops) → features or decode error of each file, through `feature_cache.encode_files`."""
        cache = _Collected()
        errors: dict = {}
        for crops in sorted({c for _, _, c in files}):
            group = [(Path(p), sha) for p, sha, c in files if c == crops]
            errors |= encode_files(self.model, cache, group, NoProgress(), crops=crops)[1]
        out = [EncodedFile(sha, _tensor_bytes(item.features), item.size) for sha, item in cache.items.items()]
        return out + [EncodedFile(sha, reason=e.reason) for sha, e in errors.items()]


def with_names(profile: Profile, names: list[str]) -> Profile:
    """The profile with its references named as the user gave them (a worker read them by absolute path)."""
    return dataclasses.replace(profile, reference_names=tuple(names))
