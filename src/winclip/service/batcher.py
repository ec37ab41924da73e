"""Micro-batching: concurrent requests share forward passes on one worker thread that owns the model.

Requests `submit` items and get `concurrent.futures.Future`s (the event loop awaits them with
`asyncio.wrap_future`). The worker takes the first waiting item, keeps collecting for at most
`window_s` seconds or until `max_batch` items, then calls `handle(batch)` once. Exclusive jobs
(`call(fn)`: loading models, changing thresholds) run on the same thread between batches, in
arrival order, so the worker is the only user of the model. Long jobs (`steps(fn)`: creating a
profile, whose prompts and references are encoded a chunk at a time) run one step at a time,
with at most one batch of waiting items between two steps, so they cannot starve predictions
and predictions cannot starve them.

`close()` refuses new work, lets the worker finish everything already queued (in-flight
requests complete and are recorded) and joins it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class ShuttingDownError(RuntimeError):
    """The batcher was closed; no new work is accepted."""


@dataclass
class _Item(Generic[T]):
    value: T
    future: Future


@dataclass
class _Call:
    fn: Callable[[], object]
    future: Future


@dataclass
class _Steps:
    fn: Callable[[], Generator[None, None, object]]
    future: Future
    running: Generator[None, None, object] | None = None


_STOP = object()


@dataclass
class BatchStats:
    """What the worker has done so far."""

    batches: int = 0
    items: int = 0
    largest: int = 0
    sizes: deque = field(default_factory=lambda: deque(maxlen=1000))  # the last 1000 batch sizes

    def add(self, size: int) -> None:
        self.batches += 1
        self.items += size
        self.largest = max(self.largest, size)
        self.sizes.append(size)


class Batcher(Generic[T, R]):
    """One worker thread; `handle(items) -> one result or exception per item`, in order."""

    def __init__(
        self,
        handle: Callable[[Sequence[T]], Sequence[R | BaseException]],
        *,
        window_s: float = 0.01,
        max_batch: int = 32,
        name: str = "winclip-model",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if window_s < 0:
            raise ValueError(f"the batch window must be >= 0 s, got {window_s}")
        self.handle = handle
        self.window_s = float(window_s)
        self.max_batch = int(max_batch)
        self.stats = BatchStats()
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Items and jobs waiting in the queue (not those of the batch being collected or run)."""
        return self._queue.qsize()

    @property
    def closed(self) -> bool:
        """True once `close` was called."""
        return self._closed

    def _put(self, job: object) -> None:
        with self._lock:
            if self._closed:
                raise ShuttingDownError("the service is shutting down")
            self._queue.put(job)

    def submit(self, item: T) -> Future:
        """Queue one item for the next batch."""
        future: Future = Future()
        self._put(_Item(item, future))
        return future

    def call(self, fn: Callable[[], R]) -> Future:
        """Run `fn()` alone on the worker thread, after everything queued before it."""
        future: Future = Future()
        self._put(_Call(fn, future))
        return future

    def steps(self, fn: Callable[[], Generator[None, None, R]]) -> Future:
        """Run the generator `fn()` on the worker thread one step (`yield`) at a time; its return value is the result.

        Between two steps the worker serves at most one batch of waiting items and any exclusive jobs.
        """
        future: Future = Future()
        self._put(_Steps(fn, future))
        return future

    def close(self, timeout: float | None = None) -> None:
        """Refuse new work, finish the queued work, stop the worker."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(_STOP)
        self._thread.join(timeout)

    # -- the worker thread -------------------------------------------------------------------

    def _next_job(self, pending: object | None, stepping: deque[_Steps]) -> object | None:
        """The next queued job (waiting for one unless a long job has a step to run; then None when idle)."""
        if pending is not None:
            return pending
        if not stepping:
            return self._queue.get()
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None

    def _run(self) -> None:
        pending: object | None = None
        stepping: deque[_Steps] = deque()
        stopping = False
        while True:
            job = None if stopping else self._next_job(pending, stepping)
            pending = None
            if job is None:
                if not stepping:
                    return
                _step(stepping)
                continue
            if job is _STOP:
                stopping = True
                continue
            if isinstance(job, _Call):
                _settle(job.future, job.fn)
                continue
            if isinstance(job, _Steps):
                if job.future.set_running_or_notify_cancel():
                    stepping.append(job)
                continue
            assert isinstance(job, _Item)  # the only other kind of job
            batch = [job]
            deadline = time.monotonic() + self.window_s
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(nxt, _Item):
                    pending = nxt
                    break
                batch.append(nxt)
            self._process(batch)
            if stepping:
                _step(stepping)

    def _process(self, batch: list[_Item]) -> None:
        batch = [item for item in batch if item.future.set_running_or_notify_cancel()]
        if not batch:
            return
        self.stats.add(len(batch))
        try:
            results = list(self.handle([item.value for item in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"batch handler returned {len(results)} results for {len(batch)} items")
        except BaseException as exc:  # noqa: BLE001 - every waiting request must hear about it
            results = [exc] * len(batch)
        for item, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)


def _step(stepping: deque[_Steps]) -> None:
    """One step of the oldest long job; settle its future when it ends; round-robin among long jobs."""
    job = stepping.popleft()
    try:
        if job.running is None:
            job.running = job.fn()
        next(job.running)
    except StopIteration as done:
        job.future.set_result(done.value)
        return
    except BaseException as exc:  # noqa: BLE001 - handed to the caller
        job.future.set_exception(exc)
        return
    stepping.append(job)


def _settle(future: Future, fn: Callable[[], object]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(fn())
    except BaseException as exc:  # noqa: BLE001 - handed to the caller
        future.set_exception(exc)
