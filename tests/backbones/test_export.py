"""`winclip export` and the ONNX Runtime / OpenVINO runtimes: exported fp32 scores and maps equal PyTorch's
within 1e-4 through the normal WinCLIP path, profiles work unchanged, bad exports fail in one line."""

import json
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnxruntime", reason="the export tests need the 'export' extra")
pytest.importorskip("openvino", reason="the export tests need the 'export' extra")

import winclip  # noqa: E402
from helpers import TINY, make_model, textured  # noqa: E402
from helpers.runtimes import RUNS, exported  # noqa: E402
from winclip.backbones import NoTextEncoderError  # noqa: E402
from winclip.backbones.export import export_backbone  # noqa: E402
from winclip.backbones.runtime import ExportedBackbone  # noqa: E402
from winclip.cli import main  # noqa: E402
from winclip.images import file_sha256  # noqa: E402
from winclip.options import ModelSpec  # noqa: E402
from winclip.paper.baselines import make_baseline  # noqa: E402

pytestmark = pytest.mark.xdist_group("exports")  # one worker makes the exports for both modules
PARITY = 1e-4  # issue 12: exported fp32 scores and maps equal PyTorch's within this
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def real_images(rng) -> list:
    """Decoded photos: the two example plates (256×256 PNGs) and non-square textured ones."""
    return [Image.open(EXAMPLES / n).convert("RGB") for n in ("good_plate.png", "scratched_plate.png")] + [
        Image.fromarray(textured(rng, 48, 80)) for _ in range(3)
    ]


def test_export_json_describes_inputs_outputs_plan_and_weights(exports):
    meta = json.loads((exports["onnx"] / "export.json").read_text())
    assert meta["backbone"] == "tiny-vit" and meta["weights_id"] == "random:seed=0" and meta["pretrained"] is None
    assert meta["inputs"] == [{"name": "pixels", "shape": ["batch", 3, 64, 64], "dtype": "float32"}]
    shapes = {o["name"]: o["shape"] for o in meta["outputs"]}
    assert shapes == {
        "image": ["batch", 32],
        "window_2": ["batch", 49, 32],
        "window_3": ["batch", 36, 32],
        "patches": ["batch", 64, 64],
    }
    assert meta["window_plan"] == [{"k": 2, "windows": 49, "patches": 4}, {"k": 3, "windows": 36, "patches": 9}]
    assert meta["grid"] == [8, 8] and meta["embed_dim"] == 32 and meta["opset"] == 18 and meta["precision"] == "fp32"
    assert meta["preprocess"]["mean"] == list(winclip.backbones.encoder.OPENAI_MEAN)
    assert set(meta["files"]) == {"vision.onnx"}
    assert meta["files"]["vision.onnx"]["sha256"] == file_sha256(exports["onnx"] / "vision.onnx")
    ov = json.loads((exports["openvino"] / "export.json").read_text())
    assert set(ov["files"]) == {"vision.xml", "vision.bin"} and ov["model_file"] == "vision.xml"
    import onnx

    graph = onnx.load(str(exports["onnx"] / "vision.onnx")).graph
    assert [i.name for i in graph.input] == ["pixels"] and [o.name for o in graph.output] == list(shapes)


@pytest.mark.parametrize("runtime, fmt", RUNS)
def test_exported_scores_and_maps_equal_pytorch(exports, rng, runtime, fmt):
    images, refs = real_images(rng), [Image.fromarray(textured(rng, 64, 64))]
    protos = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    for options in ({}, {"resize": "tile"}, {"multi_crop": True}):  # multi-crop: F^I of each crop by the export
        torch_model = make_model(precision="fp32", **options).set_prototypes(*protos)
        model = exported(exports[fmt], runtime, **options).set_prototypes(*protos)
        for shots in (None, refs):
            a, b = torch_model.fit(shots).predict(images), model.fit(shots).predict(images)
            assert len(a.maps) == len(b.maps) == 5 and b.maps[0].shape == (256, 256) and b.maps[2].shape == (48, 80)
            assert (a.scores - b.scores).abs().max().item() <= PARITY
            assert (a.zero_shot - b.zero_shot).abs().max().item() <= PARITY
            assert max((m - n).abs().max().item() for m, n in zip(a.maps, b.maps, strict=True)) <= PARITY
    x = torch.randn(3, 3, 64, 64)
    fa, fb = torch_model.encode(x), model.encode(x)
    assert fb.windows[3].shape == (3, 36, 32) and fb.patches.shape == (3, 64, 64)
    assert max((fa.image - fb.image).abs().max(), (fa.patches - fb.patches).abs().max()) <= 1e-5
    for kind, needs in (("patchcore-hidden", "hidden layers"), ("patch-token", "the image projection")):
        with pytest.raises(ValueError, match=f"the {kind} baseline needs {needs}, which the {runtime} runtime lacks"):
            make_baseline(kind, model)


def test_profiles_bind_to_an_exported_model_which_has_no_text_encoder(exports, rng):
    good = [Image.fromarray(textured(rng, 64, 64)) for _ in range(2)]
    images = real_images(rng)
    profile = winclip.Profile.create(make_model(precision="fp32"), "bottle", good)
    a = winclip.Inspector(profile, make_model(precision="fp32")).inspect(images)
    b = winclip.Inspector(profile, exported(exports["onnx"], "onnxruntime")).inspect(images)
    assert len(a) == len(b) == 5
    assert max(abs(x.score - y.score) for x, y in zip(a, b, strict=True)) <= PARITY
    model = exported(exports["onnx"], "onnxruntime")
    with pytest.raises(NoTextEncoderError, match="^the onnxruntime runtime has no text encoder: use a profile") as err:
        model.set_object("bottle")
    assert "\n" not in str(err.value)
    with pytest.raises(NoTextEncoderError):
        winclip.Profile.create(model, "bottle", good)


def test_export_then_predict_on_the_command_line_with_each_runtime(tmp_path, exports, rng, capsys):
    for i in range(3):
        Image.fromarray(textured(rng, 48, 64)).save(tmp_path / f"{i}.png")
    Image.fromarray(textured(rng, 64, 64)).save(tmp_path / "good.png")
    tiny = ["--backbone", TINY, "--pretrained", "none"]
    out = tmp_path / "cli-export"
    assert main(["export", "--format", "onnx", "--out", str(out), *tiny]) == 0
    assert json.loads((out / "export.json").read_text())["backbone"] == "tiny-vit"
    prof = tmp_path / "p.winclip"
    assert main(["profile", "create", "--object", "bottle", "--good", str(tmp_path / "good.png"), "--out", str(prof),
                 *tiny, "--precision", "fp32"]) == 0  # fmt: skip
    images = [str(tmp_path / f"{i}.png") for i in range(3)]
    scores = {}
    for runtime, folder in (("torch", None), ("onnxruntime", out), ("openvino", exports["openvino"])):
        extra = ["--runtime", runtime] + (["--export-dir", str(folder)] if folder else [])
        res = tmp_path / f"res-{runtime}"
        assert main(["predict", *images, "--profile", str(prof), "--out", str(res), "--precision", "fp32",
                     "--no-progress", *extra]) == 0  # fmt: skip
        rows = [json.loads(line) for line in (res / "results.jsonl").read_text().splitlines()[1:]]
        scores[runtime] = np.array([r["score"] for r in sorted(rows, key=lambda r: r["path"])])
        assert len(scores[runtime]) == 3
    assert f"runtime onnxruntime: {out / 'vision.onnx'}" in capsys.readouterr().err
    assert np.abs(scores["onnxruntime"] - scores["torch"]).max() <= PARITY
    assert np.abs(scores["openvino"] - scores["torch"]).max() <= PARITY
    bad = ["predict", images[0], "--object", "bottle", "--out", str(tmp_path / "x"), "--runtime", "onnxruntime",
           "--export-dir", str(out), "--backbone", TINY, "--pretrained", "none"]  # fmt: skip
    assert main(bad) == 2
    assert "winclip: error: the onnxruntime runtime has no text encoder" in capsys.readouterr().err


def broken(exports: dict[str, Path], tmp_path: Path, fmt: str = "onnx") -> Path:
    folder = tmp_path / f"broken-{fmt}"
    shutil.copytree(exports[fmt], folder)
    return folder


def test_bad_exports_fail_in_one_line(exports, tmp_path):
    def fails(folder, runtime="onnxruntime", backbone=TINY, pretrained=None, match=""):
        with pytest.raises((ValueError, FileNotFoundError), match=match) as err:
            winclip.WinCLIP(backbone, pretrained, runtime=runtime, export_dir=str(folder))
        assert "\n" not in str(err.value)

    fails(tmp_path / "nowhere", match="nowhere: export folder not found")
    empty = tmp_path / "empty"
    empty.mkdir()
    fails(empty, match="empty: not a winclip export")
    missing = broken(exports, tmp_path)
    (missing / "vision.onnx").unlink()
    fails(missing, match=r"vision.onnx: missing from the export")
    changed = broken(exports, tmp_path, "openvino")
    with open(changed / "vision.bin", "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02\x03")
    fails(changed, runtime="openvino", match="vision.bin: corrupt or changed since the export")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(exports["onnx"], corrupt)
    (corrupt / "vision.onnx").write_bytes(b"not a protobuf at all" * 100)
    meta = json.loads((corrupt / "export.json").read_text())
    meta["files"]["vision.onnx"] = {"sha256": file_sha256(corrupt / "vision.onnx"), "bytes": 2100}
    (corrupt / "export.json").write_text(json.dumps(meta))
    fails(corrupt, match="vision.onnx: onnxruntime cannot load it")
    fails(corrupt, runtime="openvino", match="vision.onnx: openvino cannot load it")
    other = json.loads(Path(TINY).read_text())
    other["vision_cfg"]["image_size"] = 48
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "tiny-vit.json").write_text(json.dumps(other))
    fails(
        exports["onnx"],
        backbone=str(tmp_path / "cfg" / "tiny-vit.json"),
        match=r"input \[64, 64\], tiny-vit takes \[48, 48\]",
    )
    fails(
        exports["onnx"], backbone="ViT-B-32", match="was exported from tiny-vit, not ViT-B-32; pass --backbone tiny-vit"
    )
    fails(exports["onnx"], pretrained="laion400m_e31", match="exported with weights none .*pass --pretrained none")
    fails(exports["openvino"], match="holds a openvino export; onnxruntime needs onnx")
    with pytest.raises(ValueError, match="onnxruntime runs exports in fp32, not bf16"):
        winclip.WinCLIP(TINY, None, runtime="onnxruntime", export_dir=str(exports["onnx"]), precision="bf16")
    with pytest.raises(ValueError, match="export_dir, --export-dir"):
        winclip.WinCLIP(TINY, None, runtime="onnxruntime")
    model = exported(exports["onnx"], "onnxruntime", scales=(4,)).set_prototypes(torch.ones(32), -torch.ones(32))
    with pytest.raises(ValueError, match=r"has window scales \[2, 3\], not \[4\]; export again with --scales 2 3 4"):
        model.predict(torch.randn(1, 3, 64, 64))


def test_an_exported_backbone_without_an_export_folder_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"runtime 'torch' has no export folder \(export_dir, --export-dir\)") as err:
        ExportedBackbone.load(ModelSpec(TINY, None))
    assert "\n" not in str(err.value)


def test_export_refuses_a_used_folder_and_a_non_fp32_backbone(tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    with pytest.raises(ValueError, match="used: exists and is not an empty folder"):
        export_backbone(make_model(precision="fp32").backbone, tmp_path / "used", "onnx")
    with pytest.raises(ValueError, match="exports are fp32"):
        export_backbone(make_model(precision="bf16").backbone, tmp_path / "new", "onnx")
    on_gpu = make_model(precision="fp32").backbone
    on_gpu.device = torch.device("cuda", 0)  # as loaded with device="cuda" (no GPU needed to be refused)
    with pytest.raises(ValueError, match="exports are traced on the CPU; load the backbone with device cpu, not cuda"):
        export_backbone(on_gpu, tmp_path / "new", "onnx")


@pytest.mark.slow
def test_default_backbone_exports_and_matches_pytorch(tmp_path, rng):
    """ViT-B-16-plus-240 (width 896, 14 heads, a 15x15 grid): the export's features equal PyTorch's with both
    runtimes. Features, not predictions: the scoring after them is the same code for every backbone (the
    contract tests show it on the tiny model), and one image keeps this test to the export's own cost."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch_model = winclip.WinCLIP("ViT-B-16-plus-240", None, device="cpu", precision="fp32")
        export_backbone(torch_model.backbone, tmp_path / "b16", "onnx")
    x = torch_model.backbone.preprocess(Image.fromarray(textured(rng, 240, 240)))[None]
    a = torch_model.backbone.encode(x, (2, 3))
    assert a.windows[2].shape == (1, 196, 640) and a.windows[3].shape == (1, 169, 640) and a.patches.shape[1] == 225
    for runtime in ("onnxruntime", "openvino"):
        b = exported(tmp_path / "b16", runtime, "ViT-B-16-plus-240", precision="fp32").backbone.encode(x, (2, 3))
        diffs = [(a.image - b.image).abs().max(), (a.patches - b.patches).abs().max()]
        diffs += [(a.windows[k] - b.windows[k]).abs().max() for k in (2, 3)]
        assert max(d.item() for d in diffs) <= PARITY, (runtime, diffs)


def test_serve_scores_profiles_with_the_exported_model(exports, tmp_path):
    pytest.importorskip("fastapi", reason="the service tests need the 'serve' extra")
    import io

    from fastapi.testclient import TestClient

    from helpers.service import LOCAL, images, library_inspection, make_profiles
    from winclip.options import ModelSpec
    from winclip.service.app import create_app
    from winclip.service.config import ServiceConfig

    made = make_profiles(tmp_path / "profiles")
    spec = ModelSpec(TINY, None, device="cpu", runtime="onnxruntime", export_dir=str(exports["onnx"]))
    config = ServiceConfig(profiles=tmp_path / "profiles", model=spec, db_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    with TestClient(create_app(config), base_url=LOCAL) as client:  # without a key only localhost may be used
        for _ in range(1500):
            ready = client.get("/health/ready")
            if ready.status_code == 200:
                break
            time.sleep(0.02)
        assert ready.status_code == 200, ready.text
        assert set(ready.json()["refused"]) == {"alien"}  # another checkpoint, refused as with PyTorch
        blob = images(10, 1)[0]
        r = client.post("/v1/profiles/bottle/predict", files=[("images", ("a.png", blob, "image/png"))])
        assert r.status_code == 200, r.text
        want = library_inspection(made["bottle"], blob)
        assert abs(r.json()["results"][0]["score"] - want.score) <= PARITY
        good = [("good", ("g.png", io.BytesIO(images(12, 1)[0]), "image/png"))]
        created = client.post("/v1/profiles", data={"name": "new", "object": "nut"}, files=good)
        assert created.status_code == 422 and "has no text encoder" in created.json()["detail"]
        assert not (tmp_path / "profiles" / "new").exists()


def test_predict_and_serve_take_the_runtime_options():
    from winclip.cli import build_parser
    from winclip.cli.requests import ModelRequest

    parser = build_parser()
    for argv in (["serve", "--profiles", "p"], ["predict", "a.png", "--out", "o", "--profile", "p"]):
        args = parser.parse_args([*argv, "--runtime", "openvino", "--export-dir", "vit-ov", "--backbone", TINY])
        spec = ModelRequest.of(args).spec()
        assert (spec.runtime, spec.export_dir) == ("openvino", "vit-ov")
        assert ModelRequest.of(parser.parse_args([*argv, "--backbone", TINY])).spec().runtime == "torch"
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--profiles", "p", "--runtime", "tensorrt"])


def openvino_runs_bf16() -> bool:
    """OpenVINO's own word on whether its CPU plugin has bf16 kernels here (AVX512-BF16 or AMX), unless the
    environment caps oneDNN's instruction set below them (as when an AVX2-only CPU is emulated)."""
    import os

    import openvino as ov

    capped = {os.environ.get(v, "").upper() for v in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")} - {""}
    if capped and not any("BF16" in isa or "AMX" in isa for isa in capped):
        return False
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_openvino_auto_precision_follows_the_cpu_and_its_own_evidence(monkeypatch):
    """The decision only: detection is monkeypatched and nothing is compiled, so nothing here depends on this CPU."""
    from winclip.backbones import precision

    cpu = torch.device("cpu")
    assert precision.resolve_precision("auto", cpu, "tiny-vit", "openvino").value == "fp32"  # nothing measured
    held = precision.Fidelity(spearman=0.9995, score_rel=0.01, map_rel=3e-3, images=64)
    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    monkeypatch.setitem(precision.OPENVINO_BF16_FIDELITY, "tiny-vit", held)
    choice = precision.resolve_precision("auto", cpu, "tiny-vit", "openvino")
    assert choice.value == "bf16" and choice.reason.startswith("auto: native bf16 and measured fidelity")
    assert precision.resolve_precision("auto", cpu, "tiny-vit", "onnxruntime").reason == "auto: onnxruntime runs fp32"
    monkeypatch.setattr(precision, "native_bf16", lambda: False)
    assert precision.resolve_precision("auto", cpu, "tiny-vit", "openvino").value == "fp32"


def test_openvino_bf16_runs_bf16_and_stays_close(exports, rng):
    if not openvino_runs_bf16():
        pytest.skip("OpenVINO has no bf16 kernels here (no AVX512-BF16 or AMX, or oneDNN capped below them)")
    images = real_images(rng)
    protos = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    a = make_model(precision="fp32").set_prototypes(*protos).predict(images)
    b = exported(exports["openvino"], "openvino", precision="bf16").set_prototypes(*protos).predict(images)
    c = exported(exports["openvino"], "openvino", precision="fp32").set_prototypes(*protos).predict(images)
    rel = [((a.scores - x.scores).abs() / a.scores.abs()).max().item() for x in (b, c)]
    assert 100 * rel[1] < rel[0] < 0.05, rel  # bf16 really ran (far from OpenVINO's fp32), and stayed close
