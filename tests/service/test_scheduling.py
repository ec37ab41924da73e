"""Issue 11, fair scheduling: a profile with many prompts is encoded a step at a time, so predictions keep
flowing while it is made; the number and length of extra states are limited."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the service tests need the 'serve' extra: pip install 'winclip-anomaly[serve]'")

from fastapi.testclient import TestClient

from helpers import TINY
from helpers.service import LOCAL, images, make_profiles
from winclip.inspection.profile import Profile
from winclip.options import ModelSpec
from winclip.service.app import create_app
from winclip.service.config import ServiceConfig

STEP_S = 0.15  # each text-encoder call made slow, as a large backbone's would be


def test_predictions_keep_flowing_while_a_big_profile_is_made(tmp_path, monkeypatch):
    folder = tmp_path / "profiles"
    make_profiles(folder)
    config = ServiceConfig(
        profiles=folder, model=ModelSpec(TINY, None, device="cpu"), db_url=f"sqlite:///{tmp_path / 'd.sqlite'}"
    )
    blob = images(3, 1)[0]
    states = {
        "normal_states": [f"{{o}} with sticker {i}" for i in range(32)],
        "anomalous_states": [f"{{o}} with dent {i}" for i in range(32)],
    }
    with TestClient(create_app(config), base_url=LOCAL) as c:
        deadline = time.monotonic() + 30
        while c.get("/health/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        backbone = c.app.state.winclip.station.base.backbone
        real = backbone.text.encode
        calls = []

        def slow(texts):
            calls.append(len(texts))
            time.sleep(STEP_S)
            return real(texts)

        monkeypatch.setattr(backbone.text, "encode", slow)
        created = {}
        maker = threading.Thread(
            target=lambda: created.setdefault(
                "r", c.post("/v1/profiles", data={"name": "big", "object": "x", **states})
            )
        )
        maker.start()
        while not calls:
            time.sleep(0.01)
        latencies = []
        while maker.is_alive() and len(latencies) < 200:
            t0 = time.perf_counter()
            assert c.post("/v1/profiles/bottle/predict", files=[("images", ("a.png", blob, "i"))]).status_code == 200
            latencies.append(time.perf_counter() - t0)
        maker.join(60)
        made = created["r"]
        assert made.status_code == 201, made.text
    prompts = (7 + 32) * 22 + (4 + 32) * 22
    assert sum(calls) == prompts and max(calls) <= 64 and len(calls) >= 20  # encoded in steps of 64 prompts
    assert len(latencies) >= 10  # answered while the profile was being made (not after it)
    assert max(latencies) < 4 * STEP_S + 1.0  # each waited at most about one step, never the whole encoding
    assert len(Profile.load(folder / "big").normal_states) == 7 + 32


def test_extra_states_are_limited(tmp_path):
    folder = tmp_path / "profiles"
    config = ServiceConfig(
        profiles=folder, model=ModelSpec(TINY, None, device="cpu"), db_url=f"sqlite:///{tmp_path / 'd.sqlite'}"
    )
    with TestClient(create_app(config), base_url=LOCAL) as c:
        deadline = time.monotonic() + 30
        while c.get("/health/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        cases = [
            ({"normal_states": [f"{{o}} {i}" for i in range(33)]}, "normal_states: 33 states; the limit is 32"),
            ({"anomalous_states": [f"{{o}} {i}" for i in range(900)]}, "anomalous_states: 900 states"),
            ({"normal_states": ["{o} " + "x" * 300]}, "normal_states: a state of 304 characters; the limit is 200"),
            ({"object": "y" * 500}, "object: 500 characters"),
        ]
        for extra, text in cases:
            r = c.post("/v1/profiles", data={"name": "many", "object": "x", **extra})
            assert r.status_code == 422 and text in r.json()["detail"], r.text
        assert not (Path(folder) / "many").exists()
        ok = {"normal_states": [f"{{o}} {i % 32}" for i in range(100)]}  # repeats count once
        assert c.post("/v1/profiles", data={"name": "dups", "object": "x", **ok}).status_code == 201
