"""The micro-batcher: batching window, max batch, exclusive calls, errors, cancellation, drain on close."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, wait

import pytest

from winclip.service.batcher import Batcher, ShuttingDownError


def squares(batches: list[list[int]]):
    def handle(items):
        batches.append(list(items))
        return [x * x for x in items]

    return handle


def test_concurrent_items_share_a_batch_and_keep_their_results():
    batches: list[list[int]] = []
    b = Batcher(squares(batches), window_s=0.2, max_batch=64)
    futures = [b.submit(i) for i in range(10)]
    assert [f.result(5) for f in futures] == [i * i for i in range(10)]
    b.close()
    assert batches == [list(range(10))]  # all arrived inside one window
    assert (b.stats.batches, b.stats.items, b.stats.largest) == (1, 10, 10)


def test_max_batch_splits_and_no_window_means_no_wait():
    batches: list[list[int]] = []
    gate = threading.Event()

    def handle(items):
        gate.wait(5)
        return squares(batches)(items)

    b = Batcher(handle, window_s=0.0, max_batch=4)
    futures = [b.submit(i) for i in range(11)]
    gate.set()
    assert [f.result(5) for f in futures] == [i * i for i in range(11)]
    b.close()
    assert sum(map(len, batches)) == 11 and max(map(len, batches)) <= 4
    assert [x for batch in batches for x in batch] == list(range(11))  # arrival order kept


def test_calls_run_alone_in_order_on_the_worker():
    order: list[str] = []
    b = Batcher(lambda items: [order.append(f"batch{list(items)}") or x for x in items], window_s=0.05)
    f1 = b.submit(1)
    c = b.call(lambda: order.append("call") or threading.current_thread().name)
    f2 = b.submit(2)
    assert (f1.result(5), c.result(5), f2.result(5)) == (1, "winclip-model", 2)
    b.close()
    assert order == ["batch[1]", "call", "batch[2]"]


def test_errors_reach_their_callers_and_the_worker_survives():
    def handle(items):
        if "boom" in items:
            raise RuntimeError("model exploded")
        return [ValueError(f"bad {x}") if x == "bad" else x.upper() for x in items]

    b = Batcher(handle, window_s=0.05)
    boom, other = b.submit("boom"), b.submit("ok")
    with pytest.raises(RuntimeError, match="model exploded"):
        boom.result(5)
    with pytest.raises(RuntimeError, match="model exploded"):  # same batch, same failure
        other.result(5)
    bad, good = b.submit("bad"), b.submit("fine")
    with pytest.raises(ValueError, match="bad bad"):
        bad.result(5)
    assert good.result(5) == "FINE"
    with pytest.raises(ZeroDivisionError):
        b.call(lambda: 1 / 0).result(5)
    assert b.call(lambda: "alive").result(5) == "alive"
    b.close()


def test_wrong_result_count_fails_the_batch():
    b = Batcher(lambda items: [], window_s=0.0)
    with pytest.raises(RuntimeError, match="returned 0 results for 1 items"):
        b.submit(1).result(5)
    b.close()


def test_cancelled_items_are_skipped():
    batches: list[list[int]] = []
    gate = threading.Event()
    b = Batcher(squares(batches), window_s=0.0)
    blocker = b.call(lambda: gate.wait(5))
    futures = [b.submit(i) for i in range(3)]
    assert futures[1].cancel()
    gate.set()
    blocker.result(5)
    assert (futures[0].result(5), futures[2].result(5)) == (0, 4)
    b.close()
    assert [x for batch in batches for x in batch] == [0, 2]


def test_close_drains_queued_work_then_refuses():
    batches: list[list[int]] = []

    def slow(items):
        time.sleep(0.02)
        return squares(batches)(items)

    b = Batcher(slow, window_s=0.0, max_batch=2)
    futures: list[Future] = [b.submit(i) for i in range(9)]
    b.close()
    done, pending = wait(futures, timeout=0)
    assert len(done) == 9 and not pending  # finished before close returned
    assert [f.result() for f in futures] == [i * i for i in range(9)]
    with pytest.raises(ShuttingDownError):
        b.submit(1)
    with pytest.raises(ShuttingDownError):
        b.call(lambda: None)
    assert b.closed


def test_bad_settings():
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(lambda items: items, max_batch=0)
    with pytest.raises(ValueError, match="window"):
        Batcher(lambda items: items, window_s=-1)


def test_a_long_job_runs_a_step_at_a_time_between_batches():
    log: list[str] = []

    def handle(items):
        log.append(f"batch {list(items)}")
        return list(items)

    def long_job():
        for step in range(5):
            log.append(f"step {step}")
            time.sleep(0.05)
            yield
        return "made"

    b = Batcher(handle, window_s=0.0, max_batch=8)
    made = b.steps(long_job)
    time.sleep(0.02)  # the job is on its first step
    items = [b.submit(i) for i in range(3)]
    assert [f.result(5) for f in items] == [0, 1, 2]
    assert made.result(5) == "made"
    first_batch = log.index("batch [0, 1, 2]")
    assert log[0] == "step 0" and first_batch < log.index("step 2")  # served before the job ended, not after
    assert [x for x in log if x.startswith("step")] == [f"step {i}" for i in range(5)]
    failing = b.steps(lambda: (x for x in [None] if 1 / 0))
    with pytest.raises(ZeroDivisionError):
        failing.result(5)
    done = b.steps(long_job)
    b.close()  # a long job already queued is finished before the worker stops
    assert done.result(0) == "made"
