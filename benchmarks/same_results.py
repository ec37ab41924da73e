"""Do two versions of winclip give the same results? Runs predict, eval and serve on the same inputs.

    python benchmarks/same_results.py --before a731b6b          # that commit against this checkout
    python benchmarks/same_results.py --before main --after HEAD

Each version runs from its own git worktree (PYTHONPATH=<tree>/src) through the command line
only, on synthetic photos and an MVTec-style dataset with the tiny random-weight test ViT:
`profile create` + `calibrate` + `predict --save-maps`, `predict --object --resize tile`,
`eval --shots 0 1 --seeds 2`, and `serve` answering `predict?include=map` over HTTP on
127.0.0.1. It prints the largest difference of every score, map and metric between the two
and exits 1 when any differs by more than --atol (default 0: bit-identical).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers.synthetic import make_mvtec  # noqa: E402

TINY = str(ROOT / "tests" / "tiny-vit.json")
MODEL = ["--backbone", TINY, "--pretrained", "none", "--device", "cpu"]
SERVE_START_S = 120


def textured(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    small = rng.random((max(2, h // 8), max(2, w // 8), 3))
    return Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BILINEAR)


def make_inputs(folder: Path) -> None:
    """Reference, held-out and query photos (squares and oblongs) and an MVTec-style dataset."""
    rng = np.random.default_rng(7)
    for sub, n, sizes in (
        ("refs", 3, [(64, 64)]),
        ("good", 4, [(64, 64)]),
        ("bad", 3, [(64, 64)]),
        ("queries", 6, [(64, 64), (48, 80), (96, 64)]),
    ):
        (folder / sub).mkdir(parents=True)
        for i in range(n):
            h, w = sizes[i % len(sizes)]
            img = np.asarray(textured(rng, h, w)).copy()
            if sub == "bad" or (sub == "queries" and i % 2):
                img[h // 3 : h // 2, w // 4 : w // 2] = 255 - img[h // 3 : h // 2, w // 4 : w // 2]
            Image.fromarray(img).save(folder / sub / f"{i:02d}.png")
    make_mvtec(folder / "mvtec", classes=("widget",), n_train=3, n_good=3, n_bad=3)


def winclip(tree: Path, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "winclip", *args], check=True, env=env, capture_output=True, text=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multipart(paths: list[Path]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="{p.name}"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + p.read_bytes()
        + b"\r\n"
        for p in paths
    )
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def serve_results(tree: Path, profiles: Path, queries: list[Path]) -> list[dict]:
    """Start `winclip serve` on loopback, wait until ready, post the queries, stop it."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "winclip", "serve", "--profiles", str(profiles), "--host", "127.0.0.1",
         "--port", str(port), *MODEL], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVE_START_S
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health/ready", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("winclip serve did not become ready") from None
                time.sleep(0.2)
        body, ctype = multipart(queries)
        request = urllib.request.Request(f"{base}/v1/profiles/p/predict?include=map", body, {"content-type": ctype})
        with urllib.request.urlopen(request, timeout=60) as r:
            return json.loads(r.read())["results"]
    finally:
        proc.terminate()
        proc.wait(30)


def run(tree: Path, inputs: Path, out: Path) -> dict[str, np.ndarray]:
    """Every number the scenario produces, by name."""
    got: dict[str, np.ndarray] = {}
    profiles = out / "profiles"
    winclip(tree, "profile", "create", "--object", "bottle", "--good", str(inputs / "refs"), "--out",
            str(profiles / "p"), *MODEL)  # fmt: skip
    winclip(tree, "profile", "calibrate", str(profiles / "p"), "--good", str(inputs / "good"), "--bad",
            str(inputs / "bad"), "--target-fpr", "0.25", *MODEL)  # fmt: skip
    for name, extra in (("profile", ["--profile", str(profiles / "p"), "--save-maps", *MODEL]),
                        ("tiled", ["--object", "bottle", "--good", str(inputs / "refs"), "--resize", "tile",
                                   "--save-maps", *MODEL])):  # fmt: skip
        winclip(tree, "predict", str(inputs / "queries"), "--out", str(out / name), *extra)
        rows = list(csv.DictReader((out / name / "results.csv").open()))
        for key in ("score", "model_score", "zero_shot", "confidence"):
            got[f"predict {name} {key}"] = np.array([float(r[key]) for r in rows])
        got[f"predict {name} maps"] = np.concatenate(
            [np.asarray(Image.open(out / name / r["map"]), dtype=np.float64).ravel() for r in rows]
        )
    winclip(tree, "eval", "--dataset", "mvtec", "--root", str(inputs / "mvtec"), "--shots", "0", "1", "--seeds", "2",
            "--out", str(out / "eval"), "--no-progress", *MODEL)  # fmt: skip
    for r in csv.DictReader((out / "eval" / "results.csv").open()):
        got[f"eval {r['shots']}-shot seed {r['seed'] or '-'} {r['metric']}"] = np.array([float(r["value"])])
    scores = np.load(out / "eval" / "scores.npz")
    got["eval per-image scores"] = scores["score"].astype(np.float64)
    results = serve_results(tree, profiles, sorted((inputs / "queries").iterdir()))
    got["serve scores"] = np.array([r["score"] for r in results])
    got["serve maps"] = np.concatenate(
        [
            np.asarray(Image.open(io.BytesIO(__import__("base64").b64decode(r["map"]))), dtype=np.float64).ravel()
            for r in results
        ]
    )
    return got


def checkout(rev: str, where: Path) -> Path:
    """A detached worktree of `rev` (this checkout itself for "WORKTREE")."""
    if rev == "WORKTREE":
        return ROOT
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(where), rev], check=True)
    return where


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="git revision to compare against")
    parser.add_argument("--after", default="WORKTREE", help="git revision, or WORKTREE for this checkout (default)")
    parser.add_argument("--atol", type=float, default=0.0, help="largest allowed absolute difference (default: 0)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_inputs(tmp / "inputs")
        trees = [checkout(rev, tmp / f"tree{i}") for i, rev in enumerate((args.before, args.after))]
        try:
            before, after = (run(tree, tmp / "inputs", tmp / f"out{i}") for i, tree in enumerate(trees))
        finally:
            for tree in trees:
                if tree != ROOT:
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    worst = 0.0
    print(f"{'quantity':<40} {'values':>7} {'max |after - before|':>21}")
    for key in sorted(set(before) | set(after)):
        if key not in before or key not in after or before[key].shape != after[key].shape:
            print(f"{key:<40} {'MISSING or different count':>29}")
            worst = float("inf")
            continue
        diff = float(np.max(np.abs(after[key] - before[key]))) if before[key].size else 0.0
        worst = max(worst, diff)
        print(f"{key:<40} {before[key].size:>7} {diff:>21.3g}")
    print(f"largest difference {worst:.3g} ({'within' if worst <= args.atol else 'OVER'} --atol {args.atol:g})")
    return 0 if worst <= args.atol else 1


if __name__ == "__main__":
    sys.exit(main())
