"""`winclip predict --ray` and `winclip eval --ray` on a real local Ray cluster, against local runs.

One head node on loopback with 2 CPUs runs two worker processes (one Ray actor each, the tiny
random ViT); the command runs as its own process, the driver, as a user would run it. The
cluster is started once for this module and stopped at its end.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from helpers import TINY, textured
from helpers.synthetic import make_mvtec
from winclip.cli import main
from winclip.inspection.folder_run import read_records

ray = pytest.importorskip("ray", reason="the Ray tests need the 'ray' extra")
from helpers.ray_cluster import LocalCluster  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]  # one cluster, on one worker
TINY_MODEL = ["--backbone", TINY, "--pretrained", "none", "--device", "cpu"]
RUN_SECONDS = 300


@pytest.fixture(scope="module")
def cluster():
    started = LocalCluster(cpus=2)
    yield started
    started.stop()


def winclip(args: list[str], env: dict) -> subprocess.CompletedProcess:
    """The command as its own process, as a user runs it (a Ray driver)."""
    return subprocess.run(
        [sys.executable, "-m", "winclip", *args], env={**env, "HF_HUB_OFFLINE": "1"},
        capture_output=True, text=True, timeout=RUN_SECONDS,
    )  # fmt: skip


def here(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """A local run (no Ray) in this process: exit status and stderr (no interpreter to start)."""
    capsys.readouterr()
    code = main(args)
    return code, capsys.readouterr().err


def photos(folder: Path, n: int, *, bad: bool) -> Path:
    """n textured photos in two sub-folders, some stained; with `bad`, an empty, a garbage and a truncated file."""
    rng = np.random.default_rng(1)
    for i in range(n):
        img = textured(rng, 48, 64)
        if i % 3 == 0:
            img[5:20, 10:30] = (255, 0, 255)
        target = folder / f"line{i % 2}" / f"{i:03d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(target)
    if bad:
        (folder / "line0" / "empty.png").write_bytes(b"")
        (folder / "line0" / "garbage.png").write_bytes(b"not a png")
        whole = (folder / "line1" / "001.png").read_bytes()
        (folder / "line1" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    return folder


def results(out: Path) -> tuple[dict, dict[str, dict], list[list[str]], list[list[str]]]:
    """Header, records by path, results.csv rows and errors.csv rows of an output folder."""
    header, records = read_records(out / "results.jsonl")
    by_path = {r["path"]: r for r in records}
    assert len(by_path) == len(records), "a path appears twice in results.jsonl"
    with (out / "results.csv").open() as f:
        table = list(csv.reader(f))[1:]
    with (out / "errors.csv").open() as f:
        errors = list(csv.reader(f))[1:]
    return header, by_path, table, errors


def _exact(record: dict) -> dict:
    """The fields of a record that must be equal, not only close."""
    return {k: v for k, v in record.items() if k not in ("score", "confidence", "model_score", "zero_shot", "regions")}


def assert_same_results(local: Path, remote: Path) -> None:
    """Same rows (scores within 1e-6, same labels and regions), same error rows, same pictures."""
    h1, a, t1, e1 = results(local)
    h2, b, t2, e2 = results(remote)
    assert h1 == h2
    assert sorted(a) == sorted(b) and len(a) > 0
    assert sorted(r[0] for r in t2) == sorted(b) and len(t2) == len(b)  # results.csv: each image once
    for path, r in a.items():
        for key in ("score", "model_score", "zero_shot"):
            assert b[path][key] == pytest.approx(r[key], abs=1e-6)
        assert b[path]["label"] == r["label"]
        assert len(b[path]["regions"]) == len(r["regions"])
        assert _exact(b[path]) == _exact(r)
    assert sorted(e1) == sorted(e2)
    for tree in ("overlays", "masks"):
        assert sorted(p.relative_to(local / tree) for p in (local / tree).rglob("*.png")) == sorted(
            p.relative_to(remote / tree) for p in (remote / tree).rglob("*.png")
        )


def test_predict_on_ray_writes_the_local_results(tmp_path, cluster, capsys):
    inputs = photos(tmp_path / "in", 10, bad=True)
    refs = photos(tmp_path / "refs", 2, bad=False)
    prof, roi = tmp_path / "widget.winclip", tmp_path / "roi.png"
    Image.fromarray(np.kron(np.eye(2, dtype=np.uint8) * 255, np.ones((24, 32), np.uint8))).save(roi)
    made, err = here(["profile", "create", "--object", "widget", "--good", str(refs), "--out", str(prof),
                      "--roi", str(roi), *TINY_MODEL], capsys)  # fmt: skip
    assert made == 0, err
    common = ["predict", str(inputs), "--profile", str(prof), "--threshold", "0.3", "--review-threshold", "0.2",
              *TINY_MODEL, "--batch-size", "3", "--save-maps", "--no-progress"]  # fmt: skip
    local, _ = here([*common, "--out", str(tmp_path / "local")], capsys)
    remote = winclip([*common, "--out", str(tmp_path / "ray"), "--ray", cluster.address], cluster.env)
    assert local == 1 and remote.returncode == 1, remote.stderr  # 3 bad files
    assert "10 images:" in remote.stderr and "3 failed" in remote.stderr
    assert "of 2 workers used; images per worker: worker" in remote.stderr, remote.stderr
    assert_same_results(tmp_path / "local", tmp_path / "ray")
    assert len(list((tmp_path / "ray" / "maps").rglob("*.tiff"))) == 10


def _rows(jsonl: Path) -> int:
    if not jsonl.exists():
        return 0
    return sum(1 for line in jsonl.read_text().splitlines() if '"type": "result"' in line)


def _wait_for(condition, what: str, proc: subprocess.Popen, lines: list[str]) -> None:
    deadline = time.monotonic() + RUN_SECONDS
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the run ended (or timed out) before {what}: {''.join(lines)[-2000:]}")
        time.sleep(0.02)


def test_killed_worker_and_interrupted_driver_still_write_each_image_once(tmp_path, cluster, capsys):
    n = 400  # enough that the survivor still has work after the kill
    inputs = photos(tmp_path / "in", n, bad=False)
    common = ["predict", str(inputs), "--object", "widget", *TINY_MODEL, "--batch-size", "2", "--no-progress"]
    out = tmp_path / "ray"
    # preexec_fn: a suite started in the background of a script ignores SIGINT, and the driver would inherit that
    driver = subprocess.Popen(
        [sys.executable, "-m", "winclip", *common, "--out", str(out), "--ray", cluster.address],
        env={**cluster.env, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    jsonl = out / "results.jsonl"
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(driver.stderr), daemon=True)  # the driver's stderr, live
    reader.start()
    _wait_for(lambda: _rows(jsonl) >= 10 and len(cluster.worker_pids("InspectWorker")) == 2, "rows came", driver, lines)
    victim, survivor = cluster.worker_pids("InspectWorker")
    for pid in (victim, survivor):  # both frozen: however loaded the machine, the run cannot end before the faults
        os.kill(pid, signal.SIGSTOP)
    at_kill = _rows(jsonl)
    os.kill(victim, signal.SIGKILL)  # a worker process dies mid-run
    try:
        _wait_for(
            lambda: any("died; its chunks go to the others" in line for line in lines), "the driver saw it", driver,
            lines,
        )  # fmt: skip
    finally:
        os.kill(survivor, signal.SIGCONT)  # only now: the survivor cannot finish the run while the driver reacts
    _wait_for(lambda: _rows(jsonl) >= at_kill + 20, "rows came after the kill", driver, lines)
    workers = cluster.worker_pids("InspectWorker")  # the survivor and the restarted one
    for pid in workers:  # frozen again, so the run cannot end between this moment and the interrupt
        os.kill(pid, signal.SIGSTOP)
    try:
        driver.send_signal(signal.SIGINT)  # then the driver is interrupted
        time.sleep(1.0)
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    driver.wait(timeout=RUN_SECONDS)
    reader.join(timeout=RUN_SECONDS)
    err = "".join(lines)
    assert driver.returncode == 130, err
    done = _rows(jsonl)
    assert at_kill < n and done < n, "the run finished before the faults: make it longer"
    assert "1 restarted" in err and "rerun with --resume" in err, err

    resumed = winclip([*common, "--out", str(out), "--ray", cluster.address, "--resume"], cluster.env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{n} images:" in resumed.stderr and f"{done} resumed" in resumed.stderr
    assert "images per worker" in resumed.stderr
    local, err = here([*common, "--out", str(tmp_path / "local")], capsys)
    assert local == 0, err
    assert_same_results(tmp_path / "local", out)  # every image exactly once, as locally


def _eval_outputs(out: Path) -> tuple[dict, dict[str, np.ndarray]]:
    with (out / "results.csv").open() as f:
        values = {tuple(r[:5]): float(r[5]) for r in list(csv.reader(f))[1:]}
    with np.load(out / "scores.npz") as npz:
        return values, {k: npz[k] for k in npz.files}


def test_eval_on_ray_equals_the_local_eval(tmp_path, cluster, capsys):
    root = make_mvtec(tmp_path / "mvtec", n_train=3, n_good=3, n_bad=3)
    common = ["eval", "--dataset", "mvtec", "--root", str(root), "--shots", "0", "1", "--seeds", "2",
              "--batch-size", "2", *TINY_MODEL, "--no-progress"]  # fmt: skip
    local, _ = here([*common, "--out", str(tmp_path / "local")], capsys)
    remote = winclip([*common, "--out", str(tmp_path / "ray"), "--ray", cluster.address], cluster.env)
    assert local == 0 and remote.returncode == 0, remote.stderr
    assert "of 2 workers used; images per worker: worker" in remote.stderr, remote.stderr
    values, scores = _eval_outputs(tmp_path / "ray")
    expected, expected_scores = _eval_outputs(tmp_path / "local")
    assert sorted(values) == sorted(expected) and len(values) > 0
    for key, value in expected.items():
        assert values[key] == pytest.approx(value, abs=1e-6), key
    assert sorted(scores) == sorted(expected_scores)
    for name, array in expected_scores.items():
        if array.dtype.kind == "f":
            np.testing.assert_allclose(scores[name], array, atol=1e-6, rtol=0)
        else:
            np.testing.assert_array_equal(scores[name], array)

    def tensors(run: str) -> dict[str, list[str]]:  # references carry no multi-crop embeddings, test images do
        return {p.name: sorted(load_file(str(p))) for p in (tmp_path / run / "cache").rglob("*.safetensors")}

    assert tensors("ray") == tensors("local")
    rerun = winclip([*common, "--out", str(tmp_path / "ray"), "--ray", cluster.address], cluster.env)
    assert rerun.returncode == 0 and "0 images encoded" in rerun.stdout, rerun.stdout + rerun.stderr
