"""The fuzzing harness's entry points and input generators, shared by tests/fuzz (bounded, in the suite) and
benchmarks/fuzz.py (long runs: Hypothesis, and Atheris where it installs).

Each `check_*` takes one input, runs it through a front door of winclip and returns what happened (a short
outcome name); an input that breaks a promise raises (AssertionError for a broken invariant, or whatever the
code raised where it should have refused in one line). The promises:

- images (`check_image`): `images.load_image` of a file and the service's `decode_upload`/`probe_upload`
  either give an RGB image within the size limits or refuse with ImageError/UploadError, one line;
  nothing is decoded beyond `max_pixels`.
- profiles (`check_profile`): `Profile.load` of a folder holding the given profile.json,
  tensors.safetensors and roi.png (inspection/store.py + inspection/checks.py) either loads a profile that
  then inspects an image with finite scores, or refuses with one ValueError/FileNotFoundError line.
- HTTP (`check_request`): any request to the service (multipart uploads, query parameters, headers) is
  answered below 500 with a one-line JSON `detail` for errors, and the memory budget is released.
"""

from __future__ import annotations

import io
import json
import math
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save as safetensors_bytes

from winclip.images import ImageError, load_image

MAX_PIXELS = 4_000_000  # what the harness lets decode (small, so each example is quick)
MIN_SIZE = 8


# -- seeds --------------------------------------------------------------------------------------------


def seed_images() -> list[bytes]:
    """Small valid images in every accepted format and the modes that matter (8/16-bit, float, palette, alpha)."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    cases = [
        (Image.fromarray(rgb), "PNG"),
        (Image.fromarray(rgb[..., 0]), "PNG"),
        (Image.fromarray(rng.integers(0, 65536, (24, 32), dtype=np.uint16)), "PNG"),
        (Image.fromarray(np.dstack([rgb, rgb[..., :1]])), "PNG"),
        (Image.fromarray(rgb).convert("P"), "GIF"),
        (Image.fromarray(rgb), "JPEG"),
        (Image.fromarray(rgb), "BMP"),
        (Image.fromarray(rng.random((24, 32), dtype=np.float32)), "TIFF"),
        (Image.fromarray(rgb), "WEBP"),
    ]
    out = []
    for image, fmt in cases:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        out.append(buffer.getvalue())
    return out


SEEDS = seed_images()


def png_with_size(width: int, height: int, mode_byte: int = 0) -> bytes:
    """A PNG whose header claims `width` x `height` (valid CRC) over a tiny all-zero stream: a pixel bomb or a
    sliver, decided from the header alone."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, mode_byte, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with a few byte-level mutations (flips, inserts, deletes, truncation, interesting integers)."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "int32"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[at:]
        elif op == "int32" and len(data) >= at + 4:
            value = draw(st.sampled_from([0, 1, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 49_000_000]))
            data[at : at + 4] = struct.pack(">I", value)
    return bytes(data)


def image_inputs() -> st.SearchStrategy[bytes]:
    """What the image front door is fed: mutated seeds, headers claiming any size, raw bytes."""
    sizes = st.integers(1, 2**31 - 1)
    claimed = st.builds(png_with_size, sizes, sizes, st.sampled_from([0, 2, 4, 6]))
    return st.one_of(mutated(SEEDS), claimed, st.binary(max_size=256))


# -- the image front door ---------------------------------------------------------------------------------


def _one_line(message: str) -> None:
    assert message and "\n" not in message, f"not one line: {message!r}"


def check_image(data: bytes, folder: Path) -> str:
    """The file front door (load_image) and the upload front door (probe_upload, decode_upload) on `data`."""
    from winclip.service.uploads import UploadError, decode_upload, probe_upload

    path = folder / "input.img"
    path.write_bytes(data)
    outcomes = []
    try:
        image = load_image(path, "input.img", MIN_SIZE, max_pixels=MAX_PIXELS)
        assert image.mode == "RGB" and min(image.size) >= MIN_SIZE and image.width * image.height <= MAX_PIXELS
        outcomes.append("decoded")
    except ImageError as exc:
        _one_line(str(exc))
        assert str(exc).startswith("input.img: ")
        outcomes.append("refused")
    try:
        need, fmt = probe_upload(data, "up", min_size=MIN_SIZE, max_pixels=MAX_PIXELS, include=frozenset({"overlay"}))
        assert need > len(data) and fmt
        image = decode_upload(data, "up", min_size=MIN_SIZE, max_pixels=MAX_PIXELS)
        assert image.mode == "RGB" and min(image.size) >= MIN_SIZE and image.width * image.height <= MAX_PIXELS
        outcomes.append("decoded")
    except UploadError as exc:
        _one_line(exc.detail)
        assert exc.status in (413, 415, 422), exc.status
        outcomes.append(f"refused {exc.status}")
    return " / ".join(outcomes)


# -- profile loading ----------------------------------------------------------------------------------------


def seed_profile(model) -> tuple[dict, dict[str, torch.Tensor], bytes]:
    """A valid few-shot profile's profile.json (as a dict), tensors and roi.png bytes."""
    from winclip.inspection.profile import Profile
    from winclip.inspection.store import ROI_FILE, profile_files

    rng = np.random.default_rng(1)
    refs = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    roi = np.zeros((64, 64), np.uint8)
    roi[8:40, 8:40] = 1
    profile = Profile.create(model, "screw", refs, roi=roi)
    files = profile_files(profile.to_json(), profile.tensors(), profile.roi)
    return profile.to_json(), profile.tensors(), files[ROI_FILE]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)  # fmt: skip


def _paths(value: object, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys and indices) into a JSON value."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated_meta(draw: st.DrawFn, meta: dict) -> bytes:
    """profile.json text with a few values replaced, keys dropped, or the text itself damaged."""
    meta = json.loads(json.dumps(meta))
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(_paths(meta)[1:]))
        parent = meta
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JSON_VALUES)
    text = json.dumps(meta, allow_nan=True).encode()
    return draw(st.one_of(st.just(text), mutated([text])))


@st.composite
def mutated_tensors(draw: st.DrawFn, tensors: dict[str, torch.Tensor]) -> bytes:
    """tensors.safetensors with tensors dropped, added, reshaped, retyped or made non-finite, or damaged bytes."""
    tensors = dict(tensors)
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from(sorted(tensors) + ["extra"]))
        op = draw(st.sampled_from(["drop", "shape", "dtype", "nan", "zeros"]))
        t = tensors.get(name, torch.zeros(3))
        if op == "drop":
            tensors.pop(name, None)
        elif op == "shape":
            shape = draw(st.lists(st.integers(0, 5), min_size=0, max_size=3))
            tensors[name] = torch.zeros(shape)
        elif op == "dtype":
            tensors[name] = t.to(draw(st.sampled_from([torch.float16, torch.float64, torch.int64, torch.uint8])))
        elif op == "nan" and t.numel():
            t = t.clone().float()
            t.view(-1)[draw(st.integers(0, t.numel() - 1))] = draw(st.sampled_from([math.nan, math.inf]))
            tensors[name] = t
        else:
            tensors[name] = torch.zeros_like(t)
    data = safetensors_bytes({k: v.contiguous() for k, v in tensors.items()})
    return draw(st.one_of(st.just(data), mutated([data])))


def check_profile(meta: bytes, tensors: bytes, roi: bytes | None, model, folder: Path) -> str:
    """Profile.load of a folder holding these files: a profile that inspects with finite scores, or one line."""
    from winclip.inspection.inspector import Inspector
    from winclip.inspection.profile import Profile, ProfileMismatchError

    (folder / "profile.json").write_bytes(meta)
    (folder / "tensors.safetensors").write_bytes(tensors)
    (folder / "roi.png").unlink(missing_ok=True)
    if roi is not None:
        (folder / "roi.png").write_bytes(roi)
    try:
        profile = Profile.load(folder)
    except (ValueError, FileNotFoundError) as exc:
        _one_line(str(exc))
        return "refused"
    try:
        inspector = Inspector(profile, model)
    except ProfileMismatchError as exc:
        _one_line(str(exc))
        return "loaded, another model"
    (result,) = inspector.inspect([Image.new("RGB", (40, 30), (90, 120, 60))])
    assert result.error is None, result.error
    assert all(math.isfinite(x) for x in (result.score, result.confidence, result.zero_shot)), result
    return "loaded and inspected"


# -- HTTP: uploads, query parameters, headers ----------------------------------------------------------------


TEXT = st.text(max_size=40) | st.sampled_from(["", "..", "kept", "0001-01-01T00:00:00+14:00", "9" * 5000, "-1", "nan"])
EXTREME_DATES = [
    "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2026-01-01", "2026-13-45T99:00", "1e308",
    "0001-01-01T00:00:00.5+00:01", "9999-12-31T23:59:59.999999Z",
]  # fmt: skip
DATES = st.sampled_from(EXTREME_DATES) | st.text(max_size=30)
NUMBERS = TEXT | st.integers(-(2**70), 2**70).map(str)


def query_params() -> st.SearchStrategy[dict]:
    """The query parameters of GET /v1/inspections(.csv)."""
    return st.fixed_dictionaries(
        {},
        optional={
            "profile": TEXT, "label": TEXT, "since": DATES, "until": DATES, "limit": NUMBERS, "offset": NUMBERS,
        },
    )  # fmt: skip


@st.composite
def multipart_body(draw: st.DrawFn, field: str = "images") -> tuple[bytes, str]:
    """(body, content type) of a multipart upload: parts with any names, file names, types and image bytes, the
    boundary sometimes missing, wrong or cut."""
    boundary = draw(st.sampled_from(["BOUNDARY", "x", "a" * 70]) | st.text("abc-_'()+,./:=? ", min_size=1, max_size=70))
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from([field, "images", "good", "roi", "name", "object"]) | st.text(max_size=10))
        filename = draw(
            st.none() | st.text(max_size=30) | st.sampled_from(['a"b.png', "a\r\nb.png", "\0.png", "../x.png"])
        )
        disposition = f'form-data; name="{name}"' + ("" if filename is None else f'; filename="{filename}"')
        kind = draw(st.sampled_from(["image/png", "application/octet-stream", "text/html", ""]))
        data = draw(image_inputs() | st.binary(max_size=64))
        head = f"Content-Disposition: {disposition}\r\nContent-Type: {kind}\r\n\r\n"
        parts.append(f"--{boundary}\r\n".encode() + head.encode("utf-8", "surrogatepass") + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    body = draw(st.one_of(st.just(body), mutated([body])))
    header = draw(st.sampled_from([f"multipart/form-data; boundary={boundary}", "multipart/form-data",
                                   "application/x-www-form-urlencoded", "text/plain"]))  # fmt: skip
    return body, header


def check_response(r, budget) -> str:
    """The promises every answer keeps: below 500, errors with a one-line JSON detail, the budget released."""
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        detail = r.json()["detail"]
        if isinstance(detail, str):
            _one_line(detail)
    assert budget.in_flight == 0, budget.in_flight
    return str(r.status_code)


def check_request(client, kind: str, value) -> str:
    """One fuzzed request of `kind` through the service (TestClient, localhost): see check_response."""
    budget = client.app.state.winclip.budget
    if kind == "inspections":
        path = "/v1/inspections" if value.pop("_csv", False) is False else "/v1/inspections.csv"
        return check_response(client.get(path, params=value), budget)
    if kind == "predict":
        (body, content_type), include = value
        r = client.post("/v1/profiles/fuzz/predict", params={"include": include}, content=body,
                        headers={"Content-Type": content_type})  # fmt: skip
        return check_response(r, budget)
    if kind == "patch":
        if_match, payload = value
        headers = {"If-Match": if_match, "Content-Type": "application/json"}
        r = client.patch("/v1/profiles/fuzz", content=payload, headers=headers)
        return check_response(r, budget)
    if kind == "path":
        return check_response(client.get(f"/v1/profiles/{value[0]}/references/{value[1]}"), budget)
    raise ValueError(f"unknown request kind {kind!r}")


def request_inputs() -> st.SearchStrategy[tuple[str, object]]:
    """(kind, value) pairs for check_request."""
    include = st.sampled_from(["", "overlay", "overlay,map", "mask,overlay,map", "x", ",,,"]) | st.text(max_size=12)
    csv = st.fixed_dictionaries({"_csv": st.booleans()})
    inspections = st.tuples(query_params(), csv).map(lambda pair: {**pair[0], **pair[1]})
    json_body = st.one_of(JSON_VALUES.map(lambda v: json.dumps(v, allow_nan=True).encode()), st.binary(max_size=40))
    if_match = st.sampled_from(['"1"', "1", "*", '"9' + "9" * 5000 + '"', '"²"', "W/\"1\"", ""]) | st.text(
        "0123456789\"*, W/", max_size=30)  # fmt: skip
    segment = st.text("abcxyz0129._-%~", min_size=1, max_size=20)
    return st.one_of(
        st.tuples(st.just("inspections"), inspections),
        st.tuples(st.just("predict"), st.tuples(multipart_body(), include)),
        st.tuples(st.just("patch"), st.tuples(if_match.map(lambda v: v.encode("utf-8")), json_body)),
        st.tuples(st.just("path"), st.tuples(segment, segment | st.integers(-(2**70), 2**70).map(str))),
    )


def atheris_split(data: bytes, parts: int) -> list[bytes]:
    """Split a fuzzer's input into `parts` byte strings (each prefixed by a 2-byte length; the last takes the rest)."""
    out = []
    for _ in range(parts - 1):
        size = int.from_bytes(data[:2].ljust(2, b"\0"), "big")
        out.append(data[2 : 2 + size])
        data = data[2 + size :]
    return [*out, data]


def atheris_join(*chunks: bytes) -> bytes:
    """The inverse of atheris_split (seeds for a corpus)."""
    return b"".join(len(c).to_bytes(2, "big") + c for c in chunks[:-1]) + chunks[-1]


def temporary_folder() -> Path:
    """A fresh folder for one fuzzing session (removed by the OS's temp cleaning; the harness rewrites it)."""
    return Path(tempfile.mkdtemp(prefix="winclip-fuzz-"))
