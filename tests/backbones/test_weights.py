"""Weights found offline in open_clip's order (fake Hugging Face caches of random tiny weights), hf-hub: and
local-dir: names, checkpoints read without running code, OpenAI-style detection, refusals naming the first misfit."""

import json
import pickle
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import save_file

import winclip
from helpers import TINY, make_model
from winclip.backbones.weights.checkpoints import UnsafeCheckpointError, read_checkpoint
from winclip.backbones.weights.setup import OPENAI_MEAN
from winclip.images import file_sha256

REPO = "winclip-test/tiny-vit"
REV = "0123456789abcdef0123456789abcdef01234567"
LAION_MEAN, LAION_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def source_model(seed: int = 1, quick_gelu: bool = False) -> torch.nn.Module:
    """The tiny open_clip model with weights unlike the seeded random ones."""
    open_clip.add_model_config(TINY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.create_model("tiny-vit", force_quick_gelu=quick_gelu).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.contiguous().clone() for k, v in model.state_dict().items()}


def write_weights(path: Path, model: torch.nn.Module) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file(state(model), str(path))
    else:
        torch.save(state(model), path)
    return path


def hub_repo(cache: Path, repo: str, files: dict[str, Path | dict], rev: str = REV) -> Path:
    """A Hugging Face cache entry as huggingface_hub writes it: blobs, snapshots/<rev>/ links, refs/main."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / rev
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(rev)
    for name, src in files.items():
        blob = root / "blobs" / f"blob-{name}"
        if isinstance(src, dict):
            blob.write_text(json.dumps(src))
        else:
            shutil.copyfile(src, blob)
        (snap / name).symlink_to(Path("../../blobs") / blob.name)
    return snap


@pytest.fixture
def tag(monkeypatch):
    """A pretrained tag "hubtag" of tiny-vit whose weights live in REPO on the hub (open_clip's registry form)."""
    open_clip.add_model_config(TINY)
    tags = {"hubtag": {"hf_hub": f"{REPO}/", "mean": LAION_MEAN, "std": LAION_STD}}
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "tiny-vit", tags)
    return "hubtag"


def load(pretrained: str, **options) -> winclip.WinCLIP:
    return winclip.WinCLIP(TINY, pretrained, device="cpu", **options)


def predict_equal(model: winclip.WinCLIP, reference: torch.nn.Module) -> bool:
    """The loaded model's features are the reference open_clip model's."""
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = reference.encode_image(x)
    return bool(torch.allclose(model.encode(x).image, ref, atol=1e-5))


@pytest.mark.parametrize(
    "files, picked",
    [
        (("open_clip_model.safetensors",), "open_clip_model.safetensors"),
        (("open_clip_pytorch_model.bin",), "open_clip_pytorch_model.bin"),
        (("open_clip_model.safetensors", "open_clip_pytorch_model.bin"), "open_clip_model.safetensors"),
    ],
)
def test_cache_is_read_in_open_clips_order_offline(tmp_path, tag, files, picked):
    good, other = source_model(1), source_model(2)
    blobs = {name: write_weights(tmp_path / "src" / name, good if name == picked else other) for name in files}
    hub_repo(tmp_path / "hub", REPO, blobs)
    model = load(tag, cache_dir=str(tmp_path / "hub"))
    assert model.info.checkpoint.name == picked and "snapshots" in str(model.info.checkpoint)
    assert model.info.source == f"Hugging Face cache {REPO} ({picked})"
    assert (model.info.mean, model.info.std) == (LAION_MEAN, LAION_STD)  # the tag's preprocessing
    assert predict_equal(model, good) and not predict_equal(model, other)


def test_empty_cache_fails_at_once_naming_both_files_and_the_fix(tmp_path, tag):
    hub_repo(tmp_path / "hub", REPO, {})
    with pytest.raises(winclip.WeightsUnavailableError) as err:
        load(tag, cache_dir=str(tmp_path / "hub"))
    text = str(err.value)
    assert "\n" not in text and "HF_HUB_OFFLINE is set" in text and "winclip weights fetch" in text
    assert f"{REPO}/open_clip_model.safetensors" in text and f"{REPO}/open_clip_pytorch_model.bin" in text


def test_a_cached_miss_of_the_safetensors_file_falls_back_to_bin(tmp_path, tag):
    good = source_model(3)
    snap = hub_repo(tmp_path / "hub", REPO, {"open_clip_pytorch_model.bin": write_weights(tmp_path / "w.bin", good)})
    no_exist = snap.parent.parent / ".no_exist" / REV
    no_exist.mkdir(parents=True)
    (no_exist / "open_clip_model.safetensors").touch()  # huggingface_hub's record of "not on the hub"
    model = load(tag, cache_dir=str(tmp_path / "hub"))
    assert model.info.checkpoint.name == "open_clip_pytorch_model.bin" and predict_equal(model, good)


@pytest.mark.parametrize("variable", ["HF_HOME", "HF_HUB_CACHE"])
def test_cache_location_follows_the_environment(tmp_path, tag, monkeypatch, variable):
    good = source_model(4)
    home = tmp_path / "home"
    hub = home / "hub" if variable == "HF_HOME" else home
    hub_repo(hub, REPO, {"open_clip_model.safetensors": write_weights(tmp_path / "w.safetensors", good)})
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv(variable, str(home))
    model = load(tag)
    assert model.info.checkpoint.is_relative_to(hub) and predict_equal(model, good)


def tiny_config(quick_gelu: bool = False, mean=LAION_MEAN, std=LAION_STD) -> dict:
    cfg = json.loads(Path(TINY).read_text())
    if quick_gelu:
        cfg["quick_gelu"] = True
    return {"model_cfg": cfg, "preprocess_cfg": {"mean": list(mean), "std": list(std)}}


def test_hf_hub_names_load_config_and_weights_from_the_cache(tmp_path):
    good = source_model(5, quick_gelu=True)
    weights = write_weights(tmp_path / "w.safetensors", good)
    hub_repo(
        tmp_path / "hub", REPO, {"open_clip_model.safetensors": weights, "open_clip_config.json": tiny_config(True)}
    )
    model = load(f"hf-hub:{REPO}", cache_dir=str(tmp_path / "hub"))
    assert model.info.name == "tiny-vit"  # the config is tiny-vit's (QuickGELU aside)
    assert model.info.activation == "QuickGELU" and model.info.mean == LAION_MEAN
    assert model.info.config.endswith("open_clip_config.json")
    assert predict_equal(model, good)
    other = winclip.WinCLIP("ViT-B-32", f"hf-hub:{REPO}", device="cpu", cache_dir=str(tmp_path / "hub"))
    assert open_clip.get_model_config(other.info.name) == json.loads(Path(TINY).read_text())  # the source's own
    assert other.info.activation == "QuickGELU" and predict_equal(other, good)


def test_local_dir_with_and_without_a_config(tmp_path):
    good = source_model(6, quick_gelu=True)
    folder = tmp_path / "weights"
    write_weights(folder / "open_clip_pytorch_model.bin", source_model(7))
    write_weights(folder / "open_clip_model.safetensors", good)  # open_clip prefers this one
    (folder / "open_clip_config.json").write_text(json.dumps(tiny_config(True)))
    model = load(f"local-dir:{folder}")
    assert model.info.checkpoint.name == "open_clip_model.safetensors" and model.info.activation == "QuickGELU"
    assert predict_equal(model, good)
    (folder / "open_clip_config.json").unlink()
    plain = load(f"local-dir:{folder}")  # no config: the named backbone's own, GELU, OpenAI mean/std
    assert plain.info.activation == "GELU" and plain.info.mean == OPENAI_MEAN and "no config" in plain.info.config
    with pytest.raises(FileNotFoundError, match="nowhere: local-dir: folder not found"):
        load(f"local-dir:{tmp_path / 'nowhere'}")


def test_a_checkpoint_beside_a_quick_gelu_config_runs_quick_gelu(tmp_path):
    good = source_model(8, quick_gelu=True)
    path = write_weights(tmp_path / "ckpt" / "weights.pt", good)
    (path.parent / "open_clip_config.json").write_text(json.dumps(tiny_config(True, OPENAI_MEAN)))
    model = load(str(path))
    banner = winclip.model.banner(model)
    assert "activation QuickGELU" in banner and "open_clip_config.json" in banner and predict_equal(model, good)
    (path.parent / "open_clip_config.json").unlink()
    alone = load(str(path))  # the bare file runs the backbone's own GELU: the config is what tells
    assert alone.info.activation == "GELU" and not predict_equal(alone, good)


def test_a_file_with_a_known_sha256_takes_its_tags_setup(tmp_path, monkeypatch):
    good = source_model(9, quick_gelu=True)
    path = write_weights(tmp_path / "ViT-tiny.pt", good)
    digest = file_sha256(path)
    url = f"https://openaipublic.azureedge.net/clip/models/{digest}/ViT-tiny.pt"
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "tiny-vit", {"openai": {"url": url, "quick_gelu": True}})
    model = load(str(path))
    assert model.info.activation == "QuickGELU" and model.info.config == "sha256 is open_clip's tiny-vit/openai"
    assert model.info.weights_id == f"sha256:{digest}" and predict_equal(model, good)


def torchscript_archive(path: Path, model: torch.nn.Module) -> Path:
    """A traced open_clip model saved as TorchScript: OpenAI's release format (QuickGELU, OpenAI mean/std)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(
            model, (torch.randn(1, 3, 64, 64), torch.zeros(1, 77, dtype=torch.long)), check_trace=False
        )
    traced.save(str(path))
    return path


def test_torchscript_archives_are_read_without_running_code_and_run_quick_gelu(tmp_path):
    good = source_model(10, quick_gelu=True)
    path = torchscript_archive(tmp_path / "ViT-tiny.pt", good)
    ckpt = read_checkpoint(path)
    assert ckpt.format == "TorchScript archive"
    expected = good.state_dict()
    assert len(expected) > 20 and all(torch.equal(ckpt.state[k], v) for k, v in expected.items())
    model = load(str(path))
    assert model.info.activation == "QuickGELU" and model.info.mean == OPENAI_MEAN
    assert "TorchScript" in winclip.model.banner(model) and predict_equal(model, good)


class Exploit:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/winclip-pwned"),))


def test_pickled_code_is_refused_and_never_run(tmp_path):
    marker = Path("/tmp/winclip-pwned")
    marker.unlink(missing_ok=True)
    pt = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "x": Exploit()}, pt)
    with pytest.raises(ValueError, match="evil.pt: not a readable checkpoint"):
        load(str(pt))
    archive = torchscript_archive(tmp_path / "evil_jit.pt", source_model(11))
    with zipfile.ZipFile(archive) as z:
        members = {n: z.read(n) for n in z.namelist()}
    data = next(n for n in members if n.endswith("/data.pkl"))
    members[data] = pickle.dumps(Exploit(), protocol=2)
    with zipfile.ZipFile(archive, "w") as z:
        for name, content in members.items():
            z.writestr(name, content)
    with pytest.raises(UnsafeCheckpointError, match="refused to unpickle"):
        read_checkpoint(archive)
    with pytest.raises(ValueError, match="evil_jit.pt: not a readable checkpoint .*refused to unpickle"):
        load(str(archive))
    assert not marker.exists()


def test_checkpoints_that_do_not_fit_name_the_first_misfit(tmp_path):
    good = state(source_model(12))
    lacking = {k: v for k, v in good.items() if k != "visual.proj"}
    torch.save(lacking, tmp_path / "lacking.pt")
    with pytest.raises(ValueError, match=r"lacking.pt: not a checkpoint of tiny-vit: it lacks visual.proj$"):
        load(str(tmp_path / "lacking.pt"))
    save_file({**good, "visual.extra": torch.zeros(2)}, str(tmp_path / "extra.safetensors"))
    with pytest.raises(ValueError, match="it has a tensor the backbone lacks: visual.extra"):
        load(str(tmp_path / "extra.safetensors"))
    wrong = dict(good, **{"visual.conv1.weight": torch.zeros(64, 3, 16, 16)})
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(ValueError) as err:
        load(str(tmp_path / "wrong.pt"))
    assert str(err.value).endswith(
        "not a checkpoint of tiny-vit: visual.conv1.weight has shape (64, 3, 16, 16), the backbone needs (64, 3, 8, 8)"
    )


def test_a_checkpoint_of_another_backbone_names_the_ones_it_fits(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b32 = open_clip.create_model("ViT-B-32")
    torch.save(state(b32), tmp_path / "b32.pt")
    with pytest.raises(ValueError, match=r"not a checkpoint of tiny-vit: .* \(its shapes fit .*ViT-B-32"):
        load(str(tmp_path / "b32.pt"))


def test_where_reports_file_source_format_and_sha256(tmp_path, tag, capsys):
    from winclip.cli import main

    good = source_model(13)
    snap = hub_repo(tmp_path / "hub", REPO, {"open_clip_model.safetensors": write_weights(tmp_path / "w.st", good)})
    args = ["weights", "where", "--backbone", TINY, "--pretrained", tag, "--cache-dir", str(tmp_path / "hub")]
    assert main(args) == 0
    out = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines() if not line.startswith("mean"))
    assert out["file"] == str(snap / "open_clip_model.safetensors") and out["format"] == "safetensors"
    assert out["sha256"] == file_sha256(snap / "open_clip_model.safetensors") and out["activation"] == "GELU"
    assert main([*args[:-1], str(tmp_path / "empty")]) == 1
    assert "NOT on this machine" in capsys.readouterr().out
    assert make_model().info.weights_id == "random:seed=0"


def test_where_answers_the_same_without_torch(tmp_path, capsys):
    """`weights where` reads open_clip's registry from its files when open_clip is not imported: the same lines."""
    from helpers import without_torch
    from winclip.cli import main

    repo = open_clip.pretrained.get_pretrained_cfg("ViT-B-16", "openai")["hf_hub"].rstrip("/")
    blob = tmp_path / "w.safetensors"
    blob.write_bytes(b"stand-in: where reads no tensor")
    hub_repo(tmp_path / "hub", repo, {"open_clip_model.safetensors": blob})
    cases = [("ViT-B-16", "openai", 0), ("ViT-L-14", "openai", 1), ("ViT-B-16-plus-240", "laion400m_e31", 1)]
    found = {}
    for backbone, tag, status in cases:
        args = ["weights", "where", "--backbone", backbone, "--pretrained", tag, "--cache-dir", str(tmp_path / "hub")]
        assert main(args) == status
        found[backbone] = capsys.readouterr().out
        assert without_torch(*args, status=status) == found[backbone]
    assert "activation  QuickGELU" in found["ViT-B-16"] and "config from pretrained tag openai" in found["ViT-B-16"]
    assert "NOT on this machine" in found["ViT-L-14"]


def fake_hub(remote: dict[str, Path], calls: list):
    """huggingface_hub.hf_hub_download against files in `remote` (filename → file), writing the real cache layout."""

    def download(repo_id, filename, *, cache_dir=None, revision=None, **_):
        calls.append(filename)
        if filename not in remote:
            raise FileNotFoundError(f"404 Client Error: {repo_id}/{filename} not found")
        return str(hub_repo(Path(cache_dir), repo_id, {filename: remote[filename]}) / filename)

    return download


def test_fetch_carry_verify_then_predict_offline_from_the_copy(tmp_path, tag, monkeypatch, capsys):
    from winclip.cli import main

    good = source_model(14)
    calls = []
    remote = {"open_clip_pytorch_model.bin": write_weights(tmp_path / "remote" / "w.bin", good)}
    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_hub(remote, calls))
    fetched = tmp_path / "fetched"
    assert main(["weights", "fetch", "--backbone", TINY, "--pretrained", tag, "--out", str(fetched)]) == 0
    assert calls == ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]  # open_clip's order
    manifest = json.loads((fetched / "winclip-weights.json").read_text())
    (entry,) = manifest["entries"]
    assert (entry["backbone"], entry["pretrained"]) == ("tiny-vit", tag)
    assert entry["source"] == f"hf-hub:{REPO}/open_clip_pytorch_model.bin"
    paths = [f["path"] for f in entry["files"]]
    assert paths == [f"models--{REPO.replace('/', '--')}/snapshots/{REV}/open_clip_pytorch_model.bin",
                     f"models--{REPO.replace('/', '--')}/refs/main"]  # fmt: skip
    assert entry["files"][0]["sha256"] == file_sha256(remote["open_clip_pytorch_model.bin"])

    carried = tmp_path / "offline-pc" / "weights"
    shutil.copytree(fetched, carried, symlinks=True)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", lambda *a, **k: pytest.fail("no network offline"))
    capsys.readouterr()
    assert main(["weights", "verify", str(carried)]) == 0
    assert capsys.readouterr().out.count("ok ") == 2
    photo = tmp_path / "part.png"
    from PIL import Image

    from helpers import textured

    Image.fromarray(textured(np.random.default_rng(0), 64, 64)).save(photo)
    args = ["predict", str(photo), "--object", "bottle", "--out", str(tmp_path / "res"), "--backbone", TINY,
            "--pretrained", tag, "--cache-dir", str(carried), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"weights: Hugging Face cache {REPO} (open_clip_pytorch_model.bin), torch.load(weights_only=True)" in err
    assert (tmp_path / "res" / "results.csv").is_file()

    blob = next((carried / f"models--{REPO.replace('/', '--')}" / "blobs").iterdir())
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    (carried / f"models--{REPO.replace('/', '--')}" / "refs" / "main").unlink()
    assert main(["weights", "verify", str(carried)]) == 1
    out = capsys.readouterr().out
    assert "open_clip_pytorch_model.bin: WRONG SHA256" in out and "refs/main: MISSING" in out
    assert main(["weights", "verify", str(tmp_path)]) == 2
    assert "no winclip-weights.json" in capsys.readouterr().err


def test_fetch_reports_what_could_not_be_downloaded(tmp_path, tag, monkeypatch):
    from winclip.backbones.weights.carry import fetch

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_hub({}, []))
    with pytest.raises(
        winclip.WeightsUnavailableError, match="cannot fetch tiny-vit/hubtag: 404 .*open_clip_pytorch_model.bin"
    ):
        fetch(TINY, tag, tmp_path / "x")
