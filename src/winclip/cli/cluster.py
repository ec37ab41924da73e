"""`winclip predict --ray` and `winclip eval --ray`: the two commands' runs on a Ray cluster.

The drivers take the command's typed request (winclip.cli.requests); Ray, torch and the library are
imported inside them, so the command line parses without them.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from ..options import MethodOptions
from .common import EXIT_FAILED, image_paths, interrupted, print_banner, unwritable
from .requests import EvalRequest, PredictRequest, RayRequest

if TYPE_CHECKING:
    from ..distributed.workers import ModelJob, ProfilePayload
    from ..inspection.inputs import Discovery
    from ..inspection.profile import Profile
    from ..model import WinCLIP


def _model_job(
    request: PredictRequest | EvalRequest, ray: RayRequest, options: MethodOptions, profile: Profile | None = None
) -> ModelJob:
    from ..distributed.workers import ModelJob

    spec = request.model.spec(profile)
    if profile is not None:  # as predict does here; a path evidence chose for this CPU is not the workers' to run
        from ..inspection.precision_check import resolve

        resolved = resolve(profile, spec)
        if spec.precision == "auto" and (resolved.precision, resolved.runtime) != ("fp32", spec.runtime):
            why = "the profile's evidence holds for this machine's CPU, not necessarily the workers' (--precision)"
            resolved = dataclasses.replace(spec, precision="fp32", precision_reason=f"auto: fp32 on Ray, {why}")
        spec = resolved
    return ModelJob(spec, options, request.model.batch_size, ray.cluster.threads)


def _profile_payload(
    request: PredictRequest, ray_request: RayRequest, ray: ModuleType
) -> tuple[ModelJob, ProfilePayload, Profile]:
    """The profile to inspect with, as bytes: read here from --profile, or created on a worker for --object."""
    from ..distributed.pool import ClusterError
    from ..distributed.workers import ProfilePayload, create_profile, with_names
    from ..inspection.profile import Profile

    if request.profile:
        profile = Profile.load(request.profile)
        job = _model_job(request, ray_request, profile.options, profile)
    else:
        good = image_paths(request.good, "--good")
        job = _model_job(request, ray_request, MethodOptions(resize=request.resize))
        cluster = ray_request.cluster
        task = ray.remote(num_cpus=cluster.cpus_per_worker, num_gpus=cluster.gpus_per_worker)(create_profile)
        roi = None if request.roi is None else str(Path(request.roi).absolute())
        made = ray.get(task.remote(job, request.object, [str(Path(g).absolute()) for g in good], roi))
        if made.error:
            raise ClusterError(f"the profile could not be made on a Ray worker: {made.error}")
        profile = with_names(made.payload.unpack(), good)
    profile = request.thresholds_on(profile)
    return job, ProfilePayload.pack(profile), profile


def predict_on_ray(request: PredictRequest, ray_request: RayRequest, found: Discovery) -> int:
    """`winclip predict --ray`: the banner, the run on the cluster's workers, the summary and the workers' line."""
    from ..distributed.pool import WorkerPool, check_version, connected
    from ..distributed.predict import run_predict_ray
    from ..distributed.workers import InspectJob, InspectWorker

    with connected(ray_request.address) as ray:
        model_job, payload, profile = _profile_payload(request, ray_request, ray)
        job = InspectJob(model_job, payload, request.min_area, request.save_maps, request.profile, request.max_pixels)
        pool = WorkerPool(ray, InspectWorker, (job,), ray_request.cluster)
        try:
            info = pool.start()
            check_version(info)
            print_banner(request, profile, found, f" on Ray ({len(pool.workers)} workers)")
            header = {**info["header"], "cwd": os.getcwd()}  # paths are resolved against the driver's folder
            summary = run_predict_ray(
                pool, header, found.images, request.out, overwrite=request.overwrite, resume=request.resume,
                chunk_size=request.model.batch_size, progress=request.progress,
            )  # fmt: skip
        except OSError as exc:  # writing: the inputs' errors are rows, never exceptions
            return unwritable(request.out, exc)
        except KeyboardInterrupt:
            return interrupted(request.out)
        finally:
            print(pool.report(), file=sys.stderr)
            pool.close()
    print(f"predict: {summary.text()}", file=sys.stderr)
    return EXIT_FAILED if summary.failed or found.unmatched else 0


@contextmanager
def eval_encoder(request: EvalRequest, model: WinCLIP) -> Iterator:
    """The encoder `evaluate` uses: `feature_cache.encode_files`, or with --ray a pool of Ray workers."""
    from ..paper.feature_cache import encode_files

    if request.ray is None:
        yield encode_files
        return
    from ..distributed.encode import RayEncoder, check_features
    from ..distributed.pool import WorkerPool, check_version, connected
    from ..distributed.workers import EncodeWorker

    with connected(request.ray.address) as ray:
        job = _model_job(request, request.ray, model.options)
        pool = WorkerPool(ray, EncodeWorker, (job,), request.ray.cluster)
        try:
            info = pool.start()
            check_version(info)
            check_features(info, model)
            print(f"eval: encoding on Ray ({len(pool.workers)} workers)", file=sys.stderr)
            yield RayEncoder(pool, request.model.batch_size)
        finally:
            print(pool.report(), file=sys.stderr)
            pool.close()
