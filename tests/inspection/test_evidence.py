"""Precision by evidence (winclip.inspection.evidence): the record, its JSON form in a profile, and auto's choice."""

from __future__ import annotations

import dataclasses
import json

import pytest

from helpers import make_model, textured
from winclip.backbones.precision import cpu_kind
from winclip.inspection.evidence import MAX_MAP_REL, MIN_SPEARMAN, Evidence, PathEvidence, choose
from winclip.inspection.profile import Profile

CPU = {"model": "AMD EPYC", "flags": ["avx2", "avx512_bf16", "avx512f"], "capability": "AVX512", "caps": {}}


def row(path: str, ms: float, spearman: float = 0.9995, flips: int = 0, map_rel: float = 1e-3, **kw) -> PathEvidence:
    return PathEvidence(path, spearman, flips, 0.2, 1e-3, map_rel, ms, **kw)


def evidence(*rows: PathEvidence, weights: str = "sha256:" + "a" * 64, cpu: dict = CPU, key: str = "k") -> Evidence:
    return Evidence(weights, key, 0.7, "held-out", 40, cpu, {"torch": "2"}, 1000.0, rows, "2026-12-06T00:00:00+00:00")


def decide(ev: Evidence | None, *, runnable=lambda r: None, weights: str = "sha256:" + "a" * 64, key: str = "k"):
    return choose(ev, weights_id=weights, profile_key=key, cpu=CPU, runnable=runnable)


def test_a_path_holds_only_within_every_bar():
    assert row("torch-bf16", 500).holds
    assert not row("torch-bf16", 500, spearman=MIN_SPEARMAN - 1e-4).holds
    assert not row("torch-bf16", 500, flips=1).holds
    assert not row("torch-bf16", 500, map_rel=MAX_MAP_REL * 1.01).holds


def test_no_evidence_runs_fp32():
    d = decide(None)
    assert d.path.name == "torch-fp32" and d.export_dir is None
    assert d.reason == "auto: fp32, the profile has no precision evidence (winclip precision check --profile P)"


def test_evidence_measured_on_other_weights_is_not_used():
    """The evidence holds, is fast and can run, but it was measured on other weights: auto must not use it."""
    ev = evidence(row("torch-bf16", 300), weights="sha256:" + "b" * 64)
    d = decide(ev, weights="sha256:" + "a" * 64)
    assert d.path.name == "torch-fp32" and "measured on other weights (sha256:bbbbbbbbbbbbbbbb" in d.reason
    assert decide(dataclasses.replace(ev, weights_id="sha256:" + "a" * 64)).path.name == "torch-bf16"


def test_evidence_from_another_kind_of_cpu_or_a_changed_profile_is_not_used():
    held = row("torch-bf16", 300)
    for cpu in (
        {**CPU, "model": "Intel Xeon"},
        {**CPU, "flags": ["avx2"]},
        {**CPU, "caps": {"ONEDNN_MAX_CPU_ISA": "AVX2"}},
    ):
        d = decide(evidence(held, cpu=cpu))
        assert d.path.name == "torch-fp32" and "another kind of CPU" in d.reason
    d = decide(evidence(held, key="before"), key="after")
    assert d.path.name == "torch-fp32" and "changed since the evidence was measured" in d.reason


def test_auto_runs_the_fastest_path_that_holds_and_can_run():
    export = {"folder": "/x/int8", "sha256": "f" * 64}
    ev = evidence(
        row("torch-bf16", 400),
        row("openvino-int8", 200, export=export),
        row("openvino-bf16", 100, spearman=0.98),  # fastest, but it breaks the ranking
    )
    d = decide(ev)
    assert d.path.name == "openvino-int8" and d.export_dir == "/x/int8" and d.evidence is not None
    assert d.reason.startswith("auto: openvino-int8, evidence on 40 held-out photo(s) of these weights on this CPU")
    assert "Spearman 0.9995, 0 label flip(s)" in d.reason and "5.00x fp32's speed" in d.reason
    d = decide(ev, runnable=lambda r: "its export is gone" if r.path == "openvino-int8" else None)
    assert d.path.name == "torch-bf16"
    d = decide(ev, runnable=lambda r: "no")
    assert (
        d.path.name == "torch-fp32"
        and "no path that holds can run here (openvino-int8: no; torch-bf16: no)" in d.reason
    )


def test_paths_that_miss_or_are_slower_than_fp32_leave_fp32():
    d = decide(evidence(row("torch-bf16", 400, flips=2), row("openvino-int8", 1500)))
    assert d.path.name == "torch-fp32"
    assert d.reason.startswith("auto: fp32, no faster path's evidence holds (torch-bf16: Spearman 0.9995, 2 label")
    assert d.reason.endswith("; openvino-int8 holds but ran at 0.67x fp32's speed)")


def test_json_round_trip_and_one_line_errors():
    ev = evidence(row("torch-bf16", 400), row("openvino-int8", 200, export={"folder": "/x", "sha256": "0" * 64}))
    data = json.loads(json.dumps(ev.to_json()))
    assert data["paths"][0]["holds"] is True and data["bars"] == {
        "min_spearman": MIN_SPEARMAN,
        "max_flips": 0,
        "max_map_rel": MAX_MAP_REL,
    }
    assert Evidence.from_json(data) == ev
    for change, message in (
        (lambda d: d.pop("weights_id"), "evidence.weights_id must be a string"),
        (lambda d: d.update(source="somewhere"), "evidence.source must be one of"),
        (lambda d: d["paths"][1].update(flips=-1), r"evidence.paths\[1\].flips must be a count"),
        (lambda d: d["paths"][0].update(spearman="high"), r"evidence.paths\[0\].spearman must be a number"),
        (lambda d: d["paths"][0].update(path="gpu-fp8"), "unknown path 'gpu-fp8'"),
    ):
        bad = json.loads(json.dumps(data))
        change(bad)
        with pytest.raises(ValueError, match=message):
            Evidence.from_json(bad)


def test_a_profile_keeps_its_evidence_through_save_and_load(tmp_path, rng):
    model = make_model()
    profile = Profile.create(model, "screw", [textured(rng, 64, 64)])
    assert profile.evidence is None and "precision evidence: none (auto runs fp32)" in profile.summary()
    ev = evidence(row("torch-bf16", 400), weights=profile.weights_id, cpu=cpu_kind())
    with_ev = dataclasses.replace(profile, evidence=ev)
    folder = with_ev.save(tmp_path / "p")
    stored = json.loads((folder / "profile.json").read_text())
    assert stored["evidence"]["paths"][0]["path"] == "torch-bf16"
    loaded = Profile.load(folder)
    assert loaded.evidence == ev and loaded.digest() == with_ev.digest() != profile.digest()
    assert "torch-bf16" in loaded.summary() and "holds" in loaded.summary()
    stored["evidence"]["paths"][0]["flips"] = "many"
    (folder / "profile.json").write_text(json.dumps(stored))
    with pytest.raises(ValueError, match=r"malformed profile \(.*evidence.paths\[0\].flips must be a count"):
        Profile.load(folder)
    del stored["evidence"]  # a profile written before evidence existed
    (folder / "profile.json").write_text(json.dumps(stored))
    assert Profile.load(folder).evidence is None
