"""The long fuzzing run: the checks of tests/helpers/fuzz.py, for minutes instead of the suite's 40 examples.

    nice python benchmarks/fuzz.py [--engine hypothesis|atheris|both] [--targets images,profiles,http]
                                   [--seconds 300] [--out fuzz-findings.json]

Targets: `images` (images.load_image and the service's probe_upload/decode_upload on mutated images of every
format and mode, and headers claiming any size), `profiles` (Profile.load, i.e. inspection/store.py and
inspection/checks.py, on mutated profile.json, tensors.safetensors and roi.png, then an inspection with what
loads), `http` (the service through its ASGI app: multipart uploads with any boundary, names and bytes, the
inspections' query parameters, If-Match and JSON bodies of PATCH, path parameters).

`hypothesis`: each target for `--seconds`, batches of examples under fresh seeds; a failing example is shrunk,
printed and recorded, and the run goes on. `atheris` (coverage-guided libFuzzer, `pip install atheris`): one
process per target for `--seconds`, winclip, Pillow and the multipart parser instrumented, seeded with valid
inputs; an input that breaks a promise is recorded (first one of each kind, with the input) and the run goes
on. Printed: one row per engine and target with the inputs tried, the time and the findings; `--out` gets them
as JSON. Run it with `nice`: it keeps one core busy.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("images", "profiles", "http")
BATCH = 200  # Hypothesis examples per seed


def setup_paths() -> None:
    """winclip from this checkout, the tests' helpers, offline, the multipart parser's warnings silenced."""
    for path in (ROOT / "src", ROOT / "tests"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")


class Target:
    """One target's check, its Hypothesis strategy, its Atheris decoding and its seed corpus."""

    def __init__(self, name: str, folder: Path) -> None:
        from helpers import fuzz

        self.name, self.folder, self.fuzz = name, folder, fuzz
        self.client = None
        if name == "profiles":
            from helpers import make_model

            self.model = make_model()
            self.meta, self.tensors, self.roi = fuzz.seed_profile(self.model)
            (folder / "profile").mkdir(exist_ok=True)
        if name == "http":
            from helpers import make_model
            from helpers.service import app_for, wait_ready
            from winclip.inspection.profile import Profile

            Profile.create(make_model(), "plate").save(folder / "profiles" / "fuzz")
            self._app = app_for(folder / "profiles", folder / "record.sqlite", max_pixels=4_000_000)
            self.client = self._app.__enter__()
            wait_ready(self.client)

    def strategy(self):
        from hypothesis import strategies as st

        fuzz = self.fuzz
        if self.name == "images":
            return fuzz.image_inputs()
        if self.name == "profiles":
            return st.tuples(fuzz.mutated_meta(self.meta), fuzz.mutated_tensors(self.tensors), fuzz.image_inputs())
        return fuzz.request_inputs()

    def check(self, value) -> str:
        fuzz = self.fuzz
        if self.name == "images":
            return fuzz.check_image(value, self.folder)
        if self.name == "profiles":
            meta, tensors, roi = value
            return fuzz.check_profile(meta, tensors, roi, self.model, self.folder / "profile")
        kind, request = value
        return fuzz.check_request(self.client, kind, request)

    def from_bytes(self, data: bytes):
        """An Atheris input (bytes) as this target's value."""
        from urllib.parse import parse_qsl, quote

        split = self.fuzz.atheris_split
        if self.name == "images":
            return data
        if self.name == "profiles":
            meta, tensors, roi = split(data, 3)
            return meta, tensors, roi or None
        selector, text, body = split(data, 3)
        kind = ("inspections", "predict", "patch", "path")[selector[0] % 4 if selector else 0]
        words = text.decode("latin-1")
        if kind == "inspections":
            return kind, {**dict(parse_qsl(words, keep_blank_values=True)), "_csv": bool(selector[1:2] == b"c")}
        if kind == "predict":
            content_type, _, include = text.partition(b"|")
            return kind, ((body, content_type.replace(b"\r", b"").replace(b"\n", b"")), include.decode("latin-1"))
        if kind == "patch":
            return kind, (text.replace(b"\r", b"").replace(b"\n", b""), body)
        name, _, index = words.partition("/")
        return kind, (quote(name or "x", safe=""), quote(index or "0", safe=""))

    def corpus(self) -> list[bytes]:
        """Valid inputs to start Atheris from."""
        from safetensors.torch import save as safetensors_bytes

        join = self.fuzz.atheris_join
        if self.name == "images":
            return [*self.fuzz.SEEDS, self.fuzz.png_with_size(1, 49_000_000), self.fuzz.png_with_size(7000, 7000)]
        if self.name == "profiles":
            return [join(json.dumps(self.meta).encode(), safetensors_bytes(self.tensors), self.roi)]
        png = self.fuzz.SEEDS[0]
        body = (b'--B\r\nContent-Disposition: form-data; name="images"; filename="a.png"\r\nContent-Type: image/png'
                b"\r\n\r\n" + png + b"\r\n--B--\r\n")  # fmt: skip
        return [
            join(b"\0", b"since=2026-01-01T00:00:00Z&limit=5&profile=fuzz", b""),
            join(b"\1", b"multipart/form-data; boundary=B|overlay,map", body),
            join(b"\2", b'"1"', b'{"threshold": 0.4}'),
            join(b"\3", b"fuzz/0", b""),
        ]


def finding(exc: BaseException) -> str:
    """A finding's identity: the exception type and where it was raised in winclip (or its last frame)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/winclip/" in f.filename or "/helpers/fuzz" in f.filename] or frames
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
    return f"{type(exc).__name__} at {where}"


def run_hypothesis(target: Target, seconds: float) -> dict:
    """Batches of BATCH examples under fresh seeds until `seconds` have passed."""
    from hypothesis import HealthCheck, given, seed, settings

    tried, findings = 0, {}
    config = settings(max_examples=BATCH, deadline=None, database=None, print_blob=True,
                      suppress_health_check=list(HealthCheck))  # fmt: skip

    def one(value) -> None:
        nonlocal tried
        tried += 1
        target.check(value)

    start, batch = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        batch += 1
        test = seed(batch)(config(given(target.strategy())(one)))
        try:
            test()
        except Exception as exc:  # noqa: BLE001 - a finding: recorded, the run goes on
            key = finding(exc)
            findings.setdefault(key, {"count": 0, "example": str(exc)[-2000:]})["count"] += 1
            print(f"hypothesis {target.name}: FINDING {key}", file=sys.stderr, flush=True)
    return {"engine": "hypothesis", "target": target.name, "inputs": tried, "seconds": time.monotonic() - start,
            "findings": findings}  # fmt: skip


def atheris_worker(name: str, seconds: int, out: Path) -> None:
    """Inside its own process: libFuzzer over one target, findings written to `out` as they come."""
    import atheris

    with atheris.instrument_imports(include=["winclip", "PIL", "multipart", "python_multipart", "helpers"]):
        setup_paths()
        import helpers.fuzz  # noqa: F401 - instrumented with what it reaches
        import winclip.service.app  # noqa: F401

    folder = Path(out).parent / f"atheris-{name}"
    folder.mkdir(exist_ok=True)
    target = Target(name, folder)
    corpus = folder / "corpus"
    corpus.mkdir(exist_ok=True)
    for i, data in enumerate(target.corpus()):
        (corpus / f"seed-{i}").write_bytes(data)
    findings: dict = {}
    runs = [0]

    def one(data: bytes) -> None:
        runs[0] += 1
        try:
            target.check(target.from_bytes(data))
        except Exception as exc:  # noqa: BLE001 - a finding: recorded, the run goes on
            if type(exc).__name__ in ("InvalidURL", "LocalProtocolError", "InvalidHeader"):
                return  # the test client cannot send it: not an input the server can get
            key = finding(exc)
            if key not in findings:
                (folder / f"finding-{len(findings)}").write_bytes(data)
                print(f"atheris {name}: FINDING {key}: {str(exc)[:300]}", file=sys.stderr, flush=True)
                findings[key] = {"count": 0, "example": f"{type(exc).__name__}: {str(exc)[:1000]}"}
            findings[key]["count"] += 1
        if runs[0] % 500 == 0:
            out.write_text(json.dumps({"runs": runs[0], "findings": findings}))

    out.write_text(json.dumps({"runs": 0, "findings": {}}))
    atheris.Setup([sys.argv[0], f"-max_total_time={seconds}", "-rss_limit_mb=6000", str(corpus)], one)
    try:
        atheris.Fuzz()
    finally:
        out.write_text(json.dumps({"runs": runs[0], "findings": findings}))


def run_atheris(name: str, seconds: int, work: Path) -> dict:
    """One target in its own process (libFuzzer ends the process it runs in)."""
    stats = work / f"atheris-{name}.json"
    start = time.monotonic()
    cmd = [sys.executable, __file__, "--atheris-worker", name, "--seconds", str(seconds), "--out", str(stats)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 600)
    elapsed = time.monotonic() - start
    (work / f"atheris-{name}.log").write_text(done.stdout + done.stderr)
    record = json.loads(stats.read_text()) if stats.exists() else {"runs": 0, "findings": {}}
    runs = re.findall(r"Done (\d+) runs in (\d+) second", done.stderr)
    tried = int(runs[-1][0]) if runs else record["runs"]
    if done.returncode != 0 and not runs:
        record["findings"][f"the fuzzer stopped (exit {done.returncode})"] = done.stderr[-800:]
    return {"engine": "atheris", "target": name, "inputs": tried, "seconds": elapsed, "findings": record["findings"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="both", choices=("hypothesis", "atheris", "both"))
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated among {', '.join(TARGETS)}")
    parser.add_argument("--seconds", type=int, default=300, help="per engine and target")
    parser.add_argument("--out", type=Path, default=Path("fuzz-findings.json"))
    parser.add_argument("--atheris-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    setup_paths()
    if args.atheris_worker:
        atheris_worker(args.atheris_worker, args.seconds, args.out)
        return
    work = args.out.resolve().parent / f"{args.out.stem}-work"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.targets.split(","):
        if args.engine in ("hypothesis", "both"):
            rows.append(run_hypothesis(Target(name, _fresh(work, name)), args.seconds))
        if args.engine in ("atheris", "both"):
            try:
                import atheris  # noqa: F401
            except ImportError as exc:
                print(f"atheris is not installed ({exc}): pip install atheris", file=sys.stderr)
            else:
                rows.append(run_atheris(name, args.seconds, work))
        args.out.write_text(json.dumps(rows, indent=2))
    print("| engine | target | inputs tried | seconds | findings |")
    print("|---|---|---|---|---|")
    for r in rows:
        found = "; ".join(f"{k} (x{v['count'] if isinstance(v, dict) else v})" for k, v in r["findings"].items())
        print(f"| {r['engine']} | {r['target']} | {r['inputs']:,} | {r['seconds']:.0f} | {found or 'none'} |")


def _fresh(work: Path, name: str) -> Path:
    folder = work / f"hypothesis-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


if __name__ == "__main__":
    main()
