"""What each command asks for, as one frozen, typed request built once from the parsed arguments and checked.

A command's `run(args)` builds its request with `Request.of(args)` and hands it on; `args` goes no
further and is never changed. Nothing heavy is imported here (the command line parses without torch).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..options import DEFAULT_BACKBONE, DEFAULT_PRETRAINED, TILED_DATASETS, MethodOptions, ModelSpec

if TYPE_CHECKING:
    from ..distributed.pool import ClusterSpec
    from ..inspection.profile import Profile
    from ..line.publish import SinkOptions
    from ..line.run import LineConfig
    from ..service.config import ServiceConfig

MEGA = 1_000_000  # options in megapixels
GIGA = 1_000_000_000  # options in GB
MiB = 1 << 20  # options in MiB
MAX_MEGAPIXELS = 1000.0  # --max-megapixels at most (the service's MAX_PIXELS)
MAX_THREADS = 1024  # --threads at most


class _Made(Protocol):
    """What a profile tells about the weights it was made with."""

    @property
    def backbone(self) -> str: ...
    @property
    def pretrained(self) -> str | None: ...
    @property
    def model_config(self) -> str | None: ...


@dataclass(frozen=True)
class ModelRequest:
    """Which weights to load and how to run them; backbone/pretrained None = a profile's own (else the defaults)."""

    backbone: str | None
    pretrained: str | None
    cache_dir: str | None
    device: str
    precision: str
    batch_size: int
    runtime: str = "torch"
    export_dir: str | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.backbone and self.backbone.endswith(".json") and not Path(self.backbone).is_file():
            raise ValueError(f"--backbone {self.backbone}: model config file not found")

    @classmethod
    def of(cls, args: argparse.Namespace) -> ModelRequest:
        runtime, export_dir = getattr(args, "runtime", "torch"), getattr(args, "export_dir", None)
        where = (args.backbone, args.pretrained, args.cache_dir, args.device)
        return cls(*where, args.precision, args.batch_size, runtime, export_dir)

    def spec(self, profile: _Made | None = None) -> ModelSpec:
        """The weights to load: those asked for, else the profile's own (its model config too), else the defaults."""
        config = None
        if profile is None:
            backbone, pretrained = self.backbone or DEFAULT_BACKBONE, self.pretrained or DEFAULT_PRETRAINED
        else:
            backbone, pretrained = self.backbone or profile.backbone, self.pretrained or profile.pretrained or "none"
            config = None if self.backbone else profile.model_config  # the profile's own config, stored in it
        return ModelSpec(
            backbone, pretrained, self.device, self.precision, self.cache_dir, self.runtime, self.export_dir, config
        )


@dataclass(frozen=True)
class RayRequest:
    """`--ray ADDRESS` and the pool of workers to start there."""

    address: str
    cluster: ClusterSpec

    @classmethod
    def of(cls, args: argparse.Namespace) -> RayRequest | None:
        if not args.ray:
            return None
        from ..distributed.pool import ClusterSpec

        return cls(args.ray, ClusterSpec(args.ray_workers, args.ray_cpus_per_worker, args.ray_gpus_per_worker))


@dataclass(frozen=True)
class PredictRequest:
    """`winclip predict`: photos, the decision rule (a profile or an object name), the outputs."""

    inputs: tuple[str, ...]
    out: str
    profile: str | None
    object: str | None
    good: tuple[str, ...]
    roi: str | None
    resize: str
    threshold: float | None
    review_threshold: float | None
    save_maps: bool
    min_area: int
    max_pixels: int
    overwrite: bool
    resume: bool
    progress: bool
    model: ModelRequest
    ray: RayRequest | None

    @classmethod
    def of(cls, args: argparse.Namespace) -> PredictRequest:
        if args.object is None and (args.good or args.roi):
            raise ValueError("--good and --roi go with --object; a profile already holds its references and ROI")
        if not args.max_megapixels > 0:
            raise ValueError(f"--max-megapixels must be > 0, got {args.max_megapixels}")
        return cls(
            tuple(args.inputs), args.out, args.profile, args.object, tuple(args.good), args.roi, args.resize,
            args.threshold, args.review_threshold, args.save_maps, args.min_area, round(args.max_megapixels * MEGA),
            args.overwrite, args.resume, not args.no_progress, ModelRequest.of(args), RayRequest.of(args),
        )  # fmt: skip

    def thresholds_on(self, profile: Profile) -> Profile:
        """The profile with --threshold/--review-threshold over its own; its review band stays while below."""
        if self.threshold is None and self.review_threshold is None:
            return profile
        threshold = profile.threshold if self.threshold is None else self.threshold
        review = self.review_threshold
        if review is None and profile.review_threshold is not None and profile.review_threshold <= threshold:
            review = profile.review_threshold
        return profile.with_thresholds(threshold, review)


@dataclass(frozen=True)
class EvalRequest:
    """`winclip eval`: a dataset, the protocol, the method options (or one of the paper's tables), the outputs."""

    dataset: str
    root: str
    classes: tuple[str, ...] | None
    shots: tuple[int, ...]
    seeds: int
    out: str
    cache: str | None
    resolution: int | None  # None = each image's own size
    progress: bool
    options: MethodOptions
    prompts: str
    object_names: str
    task_states: bool
    baseline: str | None
    table: str | None
    table_backbones: tuple[tuple[str, str | None], ...] | None
    timing_images: int
    model: ModelRequest
    ray: RayRequest | None

    @classmethod
    def of(cls, args: argparse.Namespace) -> EvalRequest:
        if args.ray and (args.table or args.baseline):
            raise ValueError("--ray encodes WinCLIP's own features: it does not go with --table or --baseline")
        if args.baseline and args.baseline.startswith("patchcore") and 0 in args.shots:
            raise ValueError(f"--baseline {args.baseline} needs references: leave 0 out of --shots")
        if args.table_backbones and args.table != "9":
            raise ValueError("--table-backbones goes with --table 9")
        given = [option for option, dest, default in args.table_sets if getattr(args, dest) != default]
        if args.table and given:
            raise ValueError(f"--table {args.table} sets {', '.join(given)} per row itself; leave them out")
        views = {
            "resize": args.resize or ("tile" if args.dataset in TILED_DATASETS else "squash"),
            "tile_overlap": args.tile_overlap,
            "tile_reduce": args.tile_reduce,
        }
        options = MethodOptions(**views) if args.table else MethodOptions(
            temperature=args.temperature,
            scales=tuple(args.scales),
            image_scale=not args.no_image_scale,
            aggregation=args.aggregation,
            multi_crop=args.multi_crop,
            fewshot_score=args.fewshot_score,
            vision_scales=None if args.vision_scales is None else tuple(args.vision_scales),
            fewshot_aggregation=args.fewshot_aggregation,
            fewshot_fusion=args.fewshot_fusion,
            patch_features=args.patch_features,
            **views,
        )  # fmt: skip
        return cls(
            args.dataset, args.root, None if args.classes is None else tuple(args.classes), tuple(args.shots),
            args.seeds, args.out, args.cache, parse_resolution(args.eval_resolution), not args.no_progress, options,
            args.prompts, args.object_names, args.task_states, args.baseline, args.table,
            parse_backbones(args.table_backbones), args.timing_images, ModelRequest.of(args), RayRequest.of(args),
        )  # fmt: skip


def parse_resolution(text: str) -> int | None:
    """``"240"`` → 240 (square evaluation size), ``"original"`` → None (each image's own size)."""
    if text == "original":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"evaluation resolution must be a positive integer or 'original', got {text!r}")
    return value


def parse_backbones(specs: list[str] | None) -> tuple[tuple[str, str | None], ...] | None:
    """``NAME:TAG`` → (name, tag); tag 'none' = random weights."""
    if not specs:
        return None
    out = []
    for spec in specs:
        name, _, tag = spec.rpartition(":")
        if not name or not tag:
            raise ValueError(f"--table-backbones: {spec!r} is not NAME:TAG (e.g. ViT-B-16:openai, config.json:none)")
        out.append((name, None if tag.lower() == "none" else tag))
    return tuple(out)


@dataclass(frozen=True)
class CreateRequest:
    """`winclip profile create`: an object, good photos, prompts and the profile folder to write."""

    object: str
    good: tuple[str, ...]
    out: str
    normal_states: tuple[str, ...]
    anomalous_states: tuple[str, ...]
    roi: str | None
    threshold: float
    prompts: str
    resize: str
    overwrite: bool
    model: ModelRequest

    @classmethod
    def of(cls, args: argparse.Namespace) -> CreateRequest:
        return cls(
            args.object, tuple(args.good), args.out, tuple(args.normal_state), tuple(args.anomalous_state), args.roi,
            args.threshold, args.prompts, args.resize, args.overwrite, ModelRequest.of(args),
        )  # fmt: skip


@dataclass(frozen=True)
class CalibrateRequest:
    """`winclip profile calibrate`: held-out photos and the false-alarm rates to calibrate at."""

    profile: str
    good: tuple[str, ...]
    bad: tuple[str, ...]
    target_fpr: float
    review_fpr: float | None
    model: ModelRequest
    precision_check: bool = True  # then measure the faster paths on the same photos (winclip precision check)

    @classmethod
    def of(cls, args: argparse.Namespace) -> CalibrateRequest:
        model, check = ModelRequest.of(args), args.precision_check
        return cls(args.profile, tuple(args.good), tuple(args.bad), args.target_fpr, args.review_fpr, model, check)


@dataclass(frozen=True)
class AddGoodRequest:
    """`winclip profile add-good`: photos to add to a profile's references."""

    profile: str
    images: tuple[str, ...]
    model: ModelRequest

    @classmethod
    def of(cls, args: argparse.Namespace) -> AddGoodRequest:
        return cls(args.profile, tuple(args.images), ModelRequest.of(args))


@dataclass(frozen=True)
class ExportRequest:
    """`winclip export`: the backbone to export (fp32, on the CPU), the format, the window scales, the folder."""

    format: str
    out: str
    scales: tuple[int, ...]
    model: ModelRequest
    calibration: tuple[str, ...] = ()  # good photos for --precision int8

    @classmethod
    def of(cls, args: argparse.Namespace) -> ExportRequest:
        return cls(args.format, args.out, tuple(args.scales), ModelRequest.of(args), tuple(args.calibration))


KEY_ENV = "WINCLIP_API_KEY"


@dataclass(frozen=True)
class ServeRequest:
    """`winclip serve`: the service's settings (a validated ServiceConfig) and where and how to listen."""

    config: ServiceConfig
    host: str
    port: int
    threads: int | None
    access_log: bool
    forwarded_allow_ips: str | None
    sinks: SinkOptions | None = None  # --mqtt / --webhook: each recorded result to the line
    outbox: Path | None = None  # their messages' outbox (one per replica)

    @classmethod
    def of(cls, args: argparse.Namespace) -> ServeRequest:
        from ..service.config import ServiceConfig
        from ..service.security import is_loopback

        if not 1 <= args.port <= 65535:
            raise ValueError(f"--port must be in 1..65535, got {args.port}")
        if args.threads is not None and not 1 <= args.threads <= MAX_THREADS:
            raise ValueError(f"--threads must be in 1..{MAX_THREADS}, got {args.threads}")
        key = api_key(args.api_key_file)
        if key is None and not args.insecure_no_auth and not is_loopback(args.host):
            raise ValueError(
                f"--host {args.host} without an API key would let anyone on the network change profiles; set a key "
                f"with --api-key-file FILE or {KEY_ENV} (or pass --insecure-no-auth)"
            )
        profiles = Path(args.profiles)
        if profiles.exists() and not profiles.is_dir():
            raise ValueError(f"--profiles {profiles}: not a folder")
        config = ServiceConfig(
            profiles=profiles,
            model=ModelRequest.of(args).spec(),
            batch_size=args.batch_size,
            db_url=args.db,
            window_ms=args.batch_window_ms,
            max_batch=args.max_batch,
            max_images=args.max_images,
            max_file_bytes=whole(args.max_upload_mb, MiB),
            max_body_bytes_in_flight=None
            if args.uploads_mb_in_flight is None
            else whole(args.uploads_mb_in_flight, MiB),
            max_pixels=whole(args.max_megapixels, MEGA),
            max_bytes_in_flight=whole(args.memory_budget_mb, MiB),
            min_area=args.min_area,
            db_connect_timeout_s=args.db_timeout,
            api_key=key,
            insecure_no_auth=args.insecure_no_auth,
            sync_interval_s=args.sync_interval,
            keep=kept_labels(args.keep, args.keep_max_gb, args.keep_dir),
            keep_max_bytes=whole(args.keep_max_gb or 0, GIGA),
            keep_dir=Path(args.keep_dir) if args.keep_dir else None,
        )
        sinks = sink_options(args)
        outbox = Path(args.outbox) if args.outbox else profiles / f"outbox-{args.port}.sqlite"
        if args.outbox and not sinks.any:
            raise ValueError("--outbox goes with --mqtt or --webhook")
        return cls(
            config, args.host, args.port, args.threads, args.access_log, args.forwarded_allow_ips,
            sinks if sinks.any else None, outbox if sinks.any else None,
        )  # fmt: skip


def whole(value: float, unit: int) -> int:
    """A finite option value in `unit`s as a whole number (clamped to ±2**63, so ServiceConfig's bounds name the
    option rather than the conversion overflowing)."""
    return round(max(-(2.0**63), min(float(value) * unit, 2.0**63)))


def api_key(key_file: str | None) -> str | None:
    """The API key from --api-key-file or WINCLIP_API_KEY (the file wins); ValueError when unusable."""
    from ..service.security import check_key

    if key_file:
        try:
            text = Path(key_file).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"--api-key-file {key_file}: cannot read it ({exc})") from None
        return check_key(text, f"--api-key-file {key_file}")
    if os.environ.get(KEY_ENV):
        return check_key(os.environ[KEY_ENV], KEY_ENV)
    return None


def kept_labels(keep: str | None, max_gb: float | None, folder: str | None) -> frozenset[str]:
    """The labels of --keep LABELS, checked with --keep-max-gb and --keep-dir; ValueError naming the problem."""
    if not keep:
        if max_gb is not None or folder:
            raise ValueError("--keep-max-gb and --keep-dir need --keep LABELS (e.g. --keep anomalous,review)")
        return frozenset()
    labels = frozenset(x.strip() for x in keep.split(",") if x.strip())
    if not labels:
        raise ValueError("--keep: give labels, e.g. --keep anomalous,review")
    if max_gb is None or max_gb <= 0:
        raise ValueError("--keep needs --keep-max-gb N (> 0): the kept photos' disk budget in GB")
    return labels


@dataclass(frozen=True)
class WatchRequest:
    """`winclip watch`: the folder, profile and outputs (a validated LineConfig), the sinks, the metrics port."""

    config: LineConfig
    sinks: SinkOptions
    metrics_port: int | None
    metrics_host: str
    threads: int | None
    model: ModelRequest

    @classmethod
    def of(cls, args: argparse.Namespace) -> WatchRequest:
        from ..line.run import LineConfig

        if args.metrics is not None and not 1 <= args.metrics <= 65535:
            raise ValueError(f"--metrics must be a port in 1..65535, got {args.metrics}")
        if args.threads is not None and args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        config = LineConfig(
            inbox=Path(args.inbox), out=Path(args.out), profile=Path(args.profile), after=args.after, db_url=args.db,
            settle_s=args.settle_seconds, queue=args.queue, batch_size=args.batch_size, outbox_max=args.outbox_max,
            sync_interval_s=args.sync_interval, min_area=args.min_area, max_pixels=round(args.max_megapixels * MEGA),
            save_maps=args.save_maps, inotify=not args.poll,
        )  # fmt: skip
        return cls(config, sink_options(args), args.metrics, args.metrics_host, args.threads, ModelRequest.of(args))


def sink_options(args: argparse.Namespace) -> SinkOptions:
    """`--mqtt ...` and `--webhook ...` (shared by watch and serve), their files read and checked."""
    from ..line.mqtt import MqttTarget
    from ..line.publish import SinkOptions
    from ..line.webhook import check_url, read_secret

    mqtt_files = (args.mqtt_credentials, args.mqtt_ca, args.mqtt_cert, args.mqtt_key)
    if args.mqtt is None and any(mqtt_files):
        raise ValueError("--mqtt-credentials, --mqtt-ca, --mqtt-cert and --mqtt-key go with --mqtt URL")
    if args.webhook is None and args.webhook_secret_file:
        raise ValueError("--webhook-secret-file goes with --webhook URL")
    mqtt = None
    if args.mqtt is not None:
        mqtt = MqttTarget.parse(
            args.mqtt, credentials=args.mqtt_credentials, ca_file=args.mqtt_ca, cert_file=args.mqtt_cert,
            key_file=args.mqtt_key,
        )  # fmt: skip
    webhook = None if args.webhook is None else check_url(args.webhook)
    secret = read_secret(args.webhook_secret_file) if args.webhook_secret_file else None
    return SinkOptions(mqtt, webhook, secret)
