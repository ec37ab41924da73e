"""The Ray worker pool's bookkeeping (retries, giving up, workers that cannot start) on a stand-in for Ray,
and `--ray` without Ray installed. Fast: no cluster (tests/test_ray.py runs a real one)."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from winclip.distributed.pool import MAX_ATTEMPTS, ClusterError, ClusterSpec, Done, GaveUp, WorkerPool


class RayError(Exception):
    pass


class RayActorError(RayError):
    pass


class ActorUnavailableError(RayActorError):
    pass


class RayTaskError(RayError):
    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


class FakeRay:
    """Ray's API as the pool uses it: calls run when their result is asked for; a dying call raises RayActorError."""

    exceptions = SimpleNamespace(
        RayError=RayError, RayActorError=RayActorError, ActorUnavailableError=ActorUnavailableError,
        RayTaskError=RayTaskError,
    )  # fmt: skip

    def __init__(self, cpus: int = 2) -> None:
        self.cpus = cpus
        self.killed = 0

    def remote(self, **options):
        return lambda cls: SimpleNamespace(remote=lambda *args: Handle(cls(*args)))

    def cluster_resources(self) -> dict:
        return {"CPU": float(self.cpus)}

    def wait(self, refs: list, num_returns: int):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        return ref()

    def kill(self, handle, no_restart: bool) -> None:
        self.killed += 1


class Handle:
    def __init__(self, actor) -> None:
        self.actor = actor

    def __getattr__(self, method: str):
        def call(*args):
            def result():
                try:
                    return getattr(self.actor, method)(*args)
                except ValueError as err:
                    raise RayTaskError(err) from None

            return result

        return SimpleNamespace(remote=call)


class Doubler:
    """A worker whose process dies on "poison", which fails on "bad", and doubles anything else."""

    def __init__(self, start_error: str | None = None) -> None:
        self.start_error = start_error

    def ready(self) -> dict:
        return {"error": self.start_error} if self.start_error else {"node": "here", "pid": 1}

    def work(self, items: list) -> list:
        if "poison" in items:
            raise RayActorError("the worker process died")
        if "bad" in items:
            raise ValueError("a bug on the worker")
        return [item * 2 for item in items]


def run(pool: WorkerPool, items: list, chunk: int) -> tuple[dict, dict]:
    done, gave_up = {}, {}
    for event in pool.run("work", items, chunk):
        if isinstance(event, GaveUp):
            assert event.item not in gave_up
            gave_up[event.item] = event.reason
        else:
            assert isinstance(event, Done) and len(event.result) == len(event.items)
            for item, value in zip(event.items, event.result, strict=True):
                assert item not in done, f"{item} finished twice"
                done[item] = value
    return done, gave_up


def test_every_item_once_and_a_worker_killing_item_is_given_up():
    pool = WorkerPool(FakeRay(), Doubler, (), ClusterSpec())
    assert pool.start() == {"node": "here", "pid": 1} and len(pool.workers) == 2
    items = ["a", "b", "poison", "c", "d", "bad", "e"]
    done, gave_up = run(pool, items, chunk=3)
    assert done == {x: x * 2 for x in items if x not in ("poison", "bad")}  # the poison's chunk-mates still finish
    assert sorted(gave_up) == ["bad", "poison"]
    assert gave_up["poison"] == f"its Ray worker process died ({MAX_ATTEMPTS} attempts)"
    assert gave_up["bad"] == f"failed on a Ray worker: a bug on the worker ({MAX_ATTEMPTS} attempts)"
    assert pool.restarts == MAX_ATTEMPTS  # one per death of a worker process
    assert pool.retried == 3 + 3 + 3 + 3  # two whole chunks once, then each input of them alone
    assert "images per worker: worker 0 (here pid 1)" in pool.report()


def test_workers_that_cannot_start_are_one_line_and_others_carry_on():
    with pytest.raises(ClusterError, match="^no Ray worker could start: model weights missing$"):
        WorkerPool(FakeRay(), Doubler, ("model weights missing",), ClusterSpec(workers=3)).start()
    fake = FakeRay(cpus=4)
    pool = WorkerPool(fake, Doubler, (), ClusterSpec(cpus_per_worker=2))
    assert len(pool.workers) == 2 and pool.start()
    assert run(pool, list("xyz"), chunk=1) == ({"x": "xx", "y": "yy", "z": "zz"}, {})
    pool.close()
    assert fake.killed == 2


@pytest.mark.parametrize(
    "spec, message",
    [
        (dict(workers=0), "--ray-workers must be >= 1"),
        (dict(cpus_per_worker=0), "--ray-cpus-per-worker must be > 0"),
        (dict(gpus_per_worker=-1), "--ray-gpus-per-worker must be >= 0"),
    ],
)
def test_bad_pool_shapes_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        ClusterSpec(**spec)


def test_a_cluster_too_small_for_one_worker_is_refused_not_waited_for():
    with pytest.raises(ClusterError, match=r"has 2 CPUs and 0 GPUs, less than one worker asks for \(1 CPUs, 1 GPUs\)"):
        WorkerPool(FakeRay(), Doubler, (), ClusterSpec(gpus_per_worker=1))


def test_gpu_workers_count_from_the_cluster_gpus():
    assert ClusterSpec(gpus_per_worker=0.5).count({"CPU": 64.0, "GPU": 4.0}) == 8
    assert ClusterSpec(workers=3, gpus_per_worker=1).count({"GPU": 8.0}) == 3


def test_without_ray_the_option_says_how_to_install_it(tmp_path):
    blocker = tmp_path / "ray"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'ray'\", name='ray')\n")
    photo = tmp_path / "a.png"
    photo.write_bytes(b"")
    env_path = f"{tmp_path}:{':'.join(sys.path)}"
    code = "import sys; from winclip.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", code, "predict", str(photo), "--object", "x", "--out", str(tmp_path / "o"),
         "--ray", "auto"], capture_output=True, text=True, env={"PYTHONPATH": env_path, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == 'winclip: error: --ray needs Ray: pip install "winclip-anomaly[ray]"\n'


def test_the_command_line_does_not_import_ray():
    code = "import sys; from winclip.cli import build_parser; build_parser(); print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
