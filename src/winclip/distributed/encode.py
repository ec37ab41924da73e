"""The encoder of `winclip eval --ray`: images encoded on the workers, features stored by the driver.

`evaluate(..., encoder=RayEncoder(pool))` calls it in place of `feature_cache.encode_files` for
each class's files not yet cached. The workers read each file by its absolute path and send
its features back as safetensors bytes; the driver saves them with `FeatureCache.save`, so the
cache, and every row scored from it, is the one a local run makes. Each call spreads one class's
files over the workers in chunks of the model's batch (the batches a local run encodes).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..images import ImageError
from ..model import WinCLIP
from ..paper.feature_cache import FeatureCache, feature_settings
from ..progress import Bar
from .pool import ClusterError, GaveUp, WorkerPool


def check_features(info: dict, model: WinCLIP) -> None:
    """Refuse workers whose features would differ from this machine's (the cache is keyed by these settings)."""
    here, there = feature_settings(model), info.get("features", {})
    differ = [f"{k} {there.get(k)!r} there, {v!r} here" for k, v in here.items() if there.get(k) != v]
    if differ:
        raise ClusterError(
            f"the Ray workers would encode other features than this machine ({'; '.join(differ)}); "
            "pass the same --precision and --device kind to both, e.g. --precision fp32"
        )


class RayEncoder:
    """`encode_files`'s contract on a pool of `EncodeWorker`s: (files encoded, decode errors by sha)."""

    def __init__(self, pool: WorkerPool, chunk_size: int) -> None:
        self.pool = pool
        self.chunk_size = chunk_size

    def __call__(
        self, model: WinCLIP, cache: FeatureCache, files: Sequence[tuple[Path, str]], bar: Bar
    ) -> tuple[int, dict[str, ImageError]]:
        crops = model.options.multi_crop  # the caller's model says whether these files need their crops
        todo = {sha: path for path, sha in files if not cache.complete(sha, crops)}
        wire = [(str(Path(path).absolute()), sha, crops) for sha, path in todo.items()]
        errors: dict[str, ImageError] = {}
        encoded = 0
        for event in self.pool.run("encode", wire, self.chunk_size):
            if isinstance(event, GaveUp):
                sha = event.item[1]
                errors[sha] = ImageError(str(todo[sha]), event.reason)
                bar.update(1)
                continue
            for file in event.result:
                if file.data is None:
                    errors[file.sha] = ImageError(str(todo[file.sha]), file.reason)
                elif not cache.complete(file.sha, crops):
                    cache.save(file.sha, file.encoded())
                    encoded += 1
                bar.update(1)
        return encoded, errors
