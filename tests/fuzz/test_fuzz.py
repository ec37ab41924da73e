"""Issue 22, the fuzzing harness in the suite: a bounded number of Hypothesis examples over each front door
(images, profile loading, HTTP uploads, query parameters and headers); `python benchmarks/fuzz.py` runs the
same checks far longer, and with Atheris (coverage-guided) where it installs. Promises: tests/helpers/fuzz.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from helpers import make_model
from helpers.fuzz import (
    check_image,
    check_profile,
    image_inputs,
    mutated_meta,
    mutated_tensors,
    request_inputs,
    seed_profile,
)

BOUNDED = settings(
    max_examples=40, deadline=None, database=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)  # fmt: skip
MODEL = make_model()
META, TENSORS, ROI = seed_profile(MODEL)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@BOUNDED
@given(data=image_inputs())
def test_every_image_is_decoded_within_the_limits_or_refused_in_one_line(scratch, data):
    check_image(data, scratch)


@BOUNDED
@given(meta=mutated_meta(META), tensors=mutated_tensors(TENSORS), roi=image_inputs())
def test_every_profile_folder_loads_and_inspects_or_is_refused_in_one_line(scratch, meta, tensors, roi):
    folder = scratch / "profile"
    folder.mkdir(exist_ok=True)
    check_profile(meta, tensors, roi, MODEL, folder)


def test_the_seed_profile_loads_and_inspects(scratch):
    import json

    from safetensors.torch import save as safetensors_bytes

    folder = scratch / "seed"
    folder.mkdir()
    outcome = check_profile(json.dumps(META).encode(), safetensors_bytes(TENSORS), ROI, MODEL, folder)
    assert outcome == "loaded and inspected"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    pytest.importorskip("fastapi", reason="the service's fuzzing needs the 'serve' extra")
    from helpers.service import app_for, wait_ready
    from winclip.inspection.profile import Profile

    folder = tmp_path_factory.mktemp("fuzz-station") / "profiles"
    Profile.create(make_model(), "plate").save(folder / "fuzz")
    with app_for(folder, folder.parent / "record.sqlite", max_pixels=4_000_000) as c:
        wait_ready(c)
        yield c


@BOUNDED
@given(request=request_inputs())
def test_every_request_is_answered_below_500_with_one_line(client, request):
    from helpers.fuzz import check_request

    kind, value = request
    check_request(client, kind, value)
