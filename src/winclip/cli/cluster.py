"""The `--ray` options of `winclip predict` and `winclip eval`, and the two commands' runs on a Ray cluster.

Parsing imports nothing heavy; Ray, torch and the library are imported inside the run functions.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..options import MethodOptions
from . import model_spec
from .profile import default_weights, image_paths

RAY_HELP = (
    "run on a Ray cluster (pip install 'winclip[ray]'): HOST:PORT of its head, or 'auto' (the cluster in "
    "RAY_ADDRESS or started on this machine with `ray start`, else a local one for this run); "
    "inputs are read by the workers at the same absolute paths"
)


def add_ray_options(parser: argparse.ArgumentParser) -> None:
    """`--ray ADDRESS` and the shape of the pool of Ray workers."""
    g = parser.add_argument_group("Ray cluster")
    g.add_argument("--ray", metavar="ADDRESS", help=RAY_HELP)
    g.add_argument(
        "--ray-workers", type=int, metavar="N", help="Ray workers, each loading the model once (default: all that fit)"
    )
    g.add_argument("--ray-cpus-per-worker", type=float, default=1.0, metavar="C", help="CPUs (torch threads) each")
    g.add_argument(
        "--ray-gpus-per-worker", type=float, default=0.0, metavar="G", help="GPUs per worker (0.5: two share one GPU)"
    )


def _pool_spec(args: argparse.Namespace):
    from ..distributed.pool import ClusterSpec

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    return ClusterSpec(args.ray_workers, args.ray_cpus_per_worker, args.ray_gpus_per_worker)


def _profile_payload(args: argparse.Namespace, ray, spec, model_job_for):
    """The profile to inspect with, as bytes: read here from --profile, or created on a worker for --object."""
    from ..distributed.pool import ClusterError
    from ..distributed.workers import ProfilePayload, create_profile, with_names
    from ..inspection.profile import Profile
    from .predict import with_threshold_options

    if args.profile:
        profile = Profile.load(args.profile)
        default_weights(args, profile)
        job = model_job_for(profile.options)
    else:
        good = image_paths(args.good, "--good")
        default_weights(args)
        job = model_job_for(MethodOptions(resize=args.resize))
        task = ray.remote(num_cpus=spec.cpus_per_worker, num_gpus=spec.gpus_per_worker)(create_profile)
        roi = None if args.roi is None else str(Path(args.roi).absolute())
        made = ray.get(task.remote(job, args.object, [str(Path(g).absolute()) for g in good], roi))
        if made.error:
            raise ClusterError(f"the profile could not be made on a Ray worker: {made.error}")
        profile = with_names(made.payload.unpack(), good)
    profile = with_threshold_options(profile, args)
    return job, ProfilePayload.pack(profile), profile


def predict_on_ray(args: argparse.Namespace, found) -> int:
    """`winclip predict --ray`: the banner, the run on the cluster's workers, the summary and the workers' line."""
    from ..distributed.pool import WorkerPool, check_version, connected
    from ..distributed.predict import run_predict_ray
    from ..distributed.workers import InspectJob, InspectWorker, ModelJob
    from .predict import MEGA, interrupted, print_banner, unwritable

    spec = _pool_spec(args)
    with connected(args.ray) as ray:
        model_job_for = lambda options: ModelJob(model_spec(args), options, args.batch_size, spec.threads)
        model_job, payload, profile = _profile_payload(args, ray, spec, model_job_for)
        max_pixels = round(args.max_megapixels * MEGA)
        job = InspectJob(model_job, payload, args.min_area, args.save_maps, args.profile, max_pixels)
        pool = WorkerPool(ray, InspectWorker, (job,), spec)
        try:
            info = pool.start()
            check_version(info)
            print_banner(args, profile, found, f" on Ray ({len(pool.workers)} workers)")
            header = {**info["header"], "cwd": os.getcwd()}  # paths are resolved against the driver's folder
            summary = run_predict_ray(
                pool, header, found.images, args.out, overwrite=args.overwrite, resume=args.resume,
                chunk_size=args.batch_size, progress=not args.no_progress,
            )  # fmt: skip
        except OSError as exc:  # writing: the inputs' errors are rows, never exceptions
            return unwritable(args.out, exc)
        except KeyboardInterrupt:
            return interrupted(args.out)
        finally:
            print(pool.report(), file=sys.stderr)
            pool.close()
    print(f"predict: {summary.text()}", file=sys.stderr)
    return 1 if summary.failed or found.unmatched else 0


@contextmanager
def eval_encoder(args: argparse.Namespace, model) -> Iterator:
    """The encoder `evaluate` uses: `feature_cache.encode_files`, or with --ray a pool of Ray workers."""
    from ..paper.feature_cache import encode_files

    if not args.ray:
        yield encode_files
        return
    from ..distributed.encode import RayEncoder, check_features
    from ..distributed.pool import WorkerPool, check_version, connected
    from ..distributed.workers import EncodeWorker, ModelJob

    spec = _pool_spec(args)
    with connected(args.ray) as ray:
        job = ModelJob(model_spec(args), model.options, args.batch_size, spec.threads)
        pool = WorkerPool(ray, EncodeWorker, (job,), spec)
        try:
            info = pool.start()
            check_version(info)
            check_features(info, model)
            print(f"eval: encoding on Ray ({len(pool.workers)} workers)", file=sys.stderr)
            yield RayEncoder(pool, args.batch_size)
        finally:
            print(pool.report(), file=sys.stderr)
            pool.close()
