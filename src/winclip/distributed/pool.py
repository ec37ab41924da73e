"""A pool of Ray actors that runs chunks of inputs with retries: the driver side of every batch job on Ray.

Ray core actors and `ray.wait`, not Ray Data: the driver must write every input exactly once
into files a local run writes (`ResultWriter` appends as results arrive), retry only the chunks
of a worker that died and give up on an input that keeps killing workers, count images per
worker, and drive one progress bar. With actors each of these is a few lines of the loop below;
Ray Data's streaming and backpressure are what `IN_FLIGHT` chunks per actor give here.

Faults: an actor is restarted by Ray (`MAX_RESTARTS`) after its process dies; the chunks it held
go back to the queue and run on whichever worker is free first. A chunk that failed twice is
split into single inputs, and an input that failed `MAX_ATTEMPTS` times is given up (`GaveUp`):
the job writes it as an error row, so nothing is retried forever.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, NamedTuple

from .. import __version__
from ..progress import plural, say

INSTALL_HINT = '--ray needs Ray: pip install "winclip-anomaly[ray]"'
IN_FLIGHT = 2  # chunks queued on each actor, so it never waits for the driver between chunks
MAX_RESTARTS = 3  # times Ray restarts an actor whose process died
MAX_ATTEMPTS = 3  # failures after which a single input is given up
SPLIT_AFTER = 2  # failures after which a chunk is retried as single inputs
MAX_PROBES = 20  # readiness checks of a restarting actor before it counts as dead


class ClusterError(ValueError):
    """Ray is missing, the cluster cannot be reached, or no worker could start or survive: one line."""


def import_ray() -> ModuleType:
    """The `ray` module, or ClusterError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ClusterError(INSTALL_HINT) from None
    return ray


def check_version(info: dict) -> None:
    """Refuse workers running another winclip than the driver (their results could differ)."""
    if info.get("version") != __version__:
        raise ClusterError(
            f"the Ray workers run winclip {info.get('version')} but this machine {__version__}; "
            "install the same version on every node"
        )


def error_line(error: BaseException | str) -> str:
    """The last non-empty line of an error's text (where Python puts the exception itself)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


@contextmanager
def connected(address: str) -> Iterator[ModuleType]:
    """Connect to the cluster at `address` (`auto`: Ray's own lookup, else a local cluster) for the block."""
    ray = import_ray()
    try:
        ray.init(address=None if address == "auto" else address, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise ClusterError(f"cannot connect to the Ray cluster at {address}: {error_line(err)}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


@dataclass(frozen=True)
class ClusterSpec:
    """How many actors and what each one holds (`workers` None: as many as the cluster's CPUs or GPUs allow)."""

    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"--ray-workers must be >= 1, got {self.workers}")
        if self.cpus_per_worker <= 0:
            raise ValueError(f"--ray-cpus-per-worker must be > 0, got {self.cpus_per_worker}")
        if self.gpus_per_worker < 0:
            raise ValueError(f"--ray-gpus-per-worker must be >= 0, got {self.gpus_per_worker}")

    @property
    def threads(self) -> int:
        """torch threads inside one actor."""
        return max(1, int(self.cpus_per_worker))

    def count(self, resources: dict[str, float]) -> int:
        """Actors to start on a cluster with these total resources."""
        if self.workers is not None:
            return self.workers
        if self.gpus_per_worker > 0:
            return max(1, int(resources.get("GPU", 0) / self.gpus_per_worker))
        return max(1, int(resources.get("CPU", 0) / self.cpus_per_worker))


@dataclass
class Chunk:
    """Inputs sent to one actor call, and how often calls with them failed."""

    items: tuple
    failures: int = 0


class Done(NamedTuple):
    """A chunk an actor finished: its inputs, what the actor returned, and which worker it was."""

    items: tuple
    result: Any  # what worker.<method>(chunk) returned, through Ray: the caller of `run` knows its type
    worker: int


class GaveUp(NamedTuple):
    """An input no worker could finish after MAX_ATTEMPTS tries."""

    item: Any  # one of the items given to `run`
    reason: str


@dataclass
class Worker:
    """One actor as the driver sees it."""

    handle: Any  # a Ray actor handle: its methods are reached by name (`handle.ready.remote()`)
    state: str = "starting"  # starting, ready, lost (restarting), dead
    info: dict = field(default_factory=dict)
    probes: int = 0
    running: int = 0


class WorkerPool:
    """`count` actors of `worker_class(*args)`, each started once; `run` streams chunks through them."""

    def __init__(self, ray: ModuleType, worker_class: type, args: tuple, spec: ClusterSpec) -> None:
        self.ray = ray
        remote = ray.remote(
            num_cpus=spec.cpus_per_worker,
            num_gpus=spec.gpus_per_worker,
            max_restarts=MAX_RESTARTS,
            max_task_retries=0,  # the driver retries, so it knows what ran where and gives up on bad inputs
        )(worker_class)
        resources = ray.cluster_resources()
        if resources.get("CPU", 0) < spec.cpus_per_worker or resources.get("GPU", 0) < spec.gpus_per_worker:
            raise ClusterError(
                f"the Ray cluster has {resources.get('CPU', 0):g} CPUs and {resources.get('GPU', 0):g} GPUs, "
                f"less than one worker asks for ({spec.cpus_per_worker:g} CPUs, {spec.gpus_per_worker:g} GPUs)"
            )
        count = spec.count(resources)
        self.workers = [Worker(remote.remote(*args)) for _ in range(count)]
        self.probes: dict[object, int] = {w.handle.ready.remote(): i for i, w in enumerate(self.workers)}
        self.images: Counter = Counter()
        self.restarts = 0
        self.retried = 0
        self.errors: list[str] = []

    def start(self) -> dict:
        """Wait for the first worker to be ready and return its `ready()` info; ClusterError if none can start."""
        while True:
            ready = [w.info for w in self.workers if w.state == "ready"]
            if ready:
                return ready[0]
            if not self.probes:
                raise ClusterError(f"no Ray worker could start: {self.errors[0] if self.errors else 'unknown'}")
            [ref], _ = self.ray.wait(list(self.probes), num_returns=1)
            self._answered(ref)

    def _answered(self, ref: object) -> None:
        """A readiness probe returned: the worker is ready, failed to start, or is still restarting."""
        index = self.probes.pop(ref)
        worker = self.workers[index]
        try:
            info = self.ray.get(ref)
        except self.ray.exceptions.ActorUnavailableError:
            worker.probes += 1
            if worker.probes < MAX_PROBES:
                self.probes[worker.handle.ready.remote()] = index
                return
            worker.state = "dead"
            self.errors.append(f"worker {index} did not come back after its process died")
            return
        except self.ray.exceptions.RayError as err:
            worker.state = "dead"
            self.errors.append(f"worker {index}: {error_line(err)}")
            return
        if info.get("error"):
            worker.state = "dead"
            self.errors.append(info["error"])
            self.ray.kill(worker.handle, no_restart=True)
            return
        worker.state, worker.info, worker.probes = "ready", info, 0

    def _lost(self, index: int) -> None:
        """A call failed because the worker's process died: probe it until Ray has restarted it."""
        worker = self.workers[index]
        if worker.state == "ready":
            say(f"ray: worker {index} ({self._where(index)}) died; its chunks go to the others")
            worker.state = "lost"
            self.restarts += 1
            self.probes[worker.handle.ready.remote()] = index

    def run(self, method: str, items: Sequence, chunk_size: int) -> Iterator[Done | GaveUp]:
        """Send `items` in chunks of `chunk_size` to `worker.<method>(chunk)`; yield each finished chunk."""
        queue = deque(Chunk(tuple(items[i : i + chunk_size])) for i in range(0, len(items), chunk_size))
        running: dict[object, tuple[int, Chunk]] = {}
        while queue or running:
            for index, worker in enumerate(self.workers):
                while worker.state == "ready" and worker.running < IN_FLIGHT and queue:
                    chunk = queue.popleft()
                    running[getattr(worker.handle, method).remote(list(chunk.items))] = (index, chunk)
                    worker.running += 1
            if not running and not self.probes:
                raise ClusterError(f"every Ray worker died ({self.errors[-1] if self.errors else 'no reason given'})")
            [ref], _ = self.ray.wait([*running, *self.probes], num_returns=1)
            if ref in self.probes:
                self._answered(ref)
                continue
            index, chunk = running.pop(ref)
            self.workers[index].running -= 1
            try:
                result = self.ray.get(ref)
            except self.ray.exceptions.RayActorError:
                self._lost(index)
                yield from self._retry(chunk, queue, "its Ray worker process died")
            except self.ray.exceptions.RayTaskError as err:
                yield from self._retry(chunk, queue, f"failed on a Ray worker: {error_line(err.cause or err)}")
            else:
                self.images[index] += len(chunk.items)
                yield Done(chunk.items, result, index)

    def _retry(self, chunk: Chunk, queue: deque, reason: str) -> Iterator[GaveUp]:
        """Queue a failed chunk again (first whole, then input by input); give up on an input failing too often."""
        failures = chunk.failures + 1
        if len(chunk.items) == 1 and failures >= MAX_ATTEMPTS:
            yield GaveUp(chunk.items[0], f"{reason} ({failures} attempts)")
            return
        self.retried += len(chunk.items)
        if failures >= SPLIT_AFTER:
            queue.extendleft(Chunk((item,), failures) for item in reversed(chunk.items))
        else:
            queue.appendleft(Chunk(chunk.items, failures))

    def report(self) -> str:
        """One line: workers used, images per worker, restarts and retried inputs."""
        used = [i for i in range(len(self.workers)) if self.images[i]]
        per = ", ".join(f"worker {i} ({self._where(i)}) {self.images[i]}" for i in used)
        return (
            f"ray: {len(used)} of {len(self.workers)} workers used; images per worker: {per or 'none'}; "
            f"{self.restarts} restarted, {plural(self.retried, 'image')} retried"
        )

    def _where(self, index: int) -> str:
        info = self.workers[index].info
        return f"{info.get('node', '?')} pid {info.get('pid', '?')}"

    def close(self) -> None:
        """End every actor of the pool."""
        for worker in self.workers:
            self.ray.kill(worker.handle, no_restart=True)


def worker_identity() -> dict:
    """Where an actor runs, for the driver's report."""
    return {"node": os.uname().nodename, "pid": os.getpid()}
