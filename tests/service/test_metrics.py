"""Prometheus metrics at /metrics: requests by route template and status, batch sizes, queue depth, images by
profile and label, errors by status, profiles; behind the API key when there is one."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the service tests need the 'serve' extra: pip install 'winclip-anomaly[serve]'")

from fastapi.testclient import TestClient

from helpers.service import app_for as support_app_for
from helpers.service import images, make_profiles, metric, metric_samples, wait_ready

KEY = "metrics-test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
PREDICT = "/v1/profiles/{name}/predict"


def app_for(tmp_path, **options) -> TestClient:
    folder = tmp_path / "profiles"
    if not folder.exists():
        make_profiles(folder)
    return support_app_for(folder, tmp_path / "m.sqlite", **options)


def scrape(client: TestClient, headers: dict) -> dict[tuple[str, tuple], float]:
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), r.text
    return metric_samples(r.text)


def test_metrics_count_what_the_replica_served(tmp_path):
    blobs = images(80, 3)
    with app_for(tmp_path, api_key=KEY) as c:
        wait_ready(c)
        assert c.get("/metrics").status_code == 401  # the key guards the metrics too (README "Security")
        labels = []
        for profile, parts in (("bottle", blobs[:2]), ("zero", blobs[2:])):
            files = [("images", (f"{profile}{i}.png", b, "image/png")) for i, b in enumerate(parts)]
            r = c.post(f"/v1/profiles/{profile}/predict", files=files, headers=AUTH)
            assert r.status_code == 200
            labels += [(profile, x["label"]) for x in r.json()["results"]]
        junk = [("images", ("junk.png", b"not an image", "image/png"))]
        assert c.post("/v1/profiles/bottle/predict", files=junk, headers=AUTH).status_code == 415
        assert c.get("/no/such/page").status_code == 404
        assert c.get("/v1/profiles/nobody", headers=AUTH).status_code == 404
        cross = {**AUTH, "Origin": "http://evil.example"}
        assert c.patch("/v1/profiles/bottle", json={"threshold": 0.9}, headers=cross).status_code == 403
        batching = wait_ready(c)["batching"]
        m = scrape(c, AUTH)
    for profile, label in set(labels):
        assert metric(m, "winclip_images_total", profile=profile, label=label) == labels.count((profile, label))
    assert metric(m, "winclip_images_total") == 3
    assert metric(m, "winclip_batch_size_sum") == 3 == batching["images"]
    assert metric(m, "winclip_batch_size_count") == batching["batches"]
    assert metric(m, "winclip_http_request_duration_seconds_count", method="POST", route=PREDICT) == 3
    assert metric(m, "winclip_http_request_duration_seconds_bucket", route=PREDICT, le="+Inf") == 3
    assert metric(m, "winclip_http_request_duration_seconds_sum", route=PREDICT) > 0
    assert metric(m, "winclip_http_responses_total", route=PREDICT, status="200") == 2
    assert metric(m, "winclip_http_responses_total", route="unmatched", status="404") == 1  # never the raw path
    assert not any("/no/such/page" in str(labels) for _, labels in m)
    assert metric(m, "winclip_http_responses_total", route="/v1/profiles/{name}", method="PATCH", status="403") == 1
    for status, n in (("401", 1), ("403", 1), ("404", 2), ("415", 1)):
        assert metric(m, "winclip_http_errors_total", status=status) == n, status
    assert metric(m, "winclip_queue_depth") == 0
    assert metric(m, "winclip_memory_in_flight_bytes") == 0
    assert (metric(m, "winclip_profiles", state="served"), metric(m, "winclip_profiles", state="refused")) == (3, 1)
    assert metric(m, "winclip_profile_revision", profile="bottle") == 1
    assert metric(m, "winclip_images_not_recorded_total") == 0
    assert metric(m, "process_resident_memory_bytes") > 0


def test_metrics_are_open_on_a_loopback_station_without_a_key_and_speak_openmetrics(tmp_path):
    with app_for(tmp_path) as c:
        wait_ready(c)
        r = c.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/openmetrics-text")
        assert r.text.endswith("# EOF\n") and "winclip_queue_depth" in r.text
        assert c.get("/metrics", headers={"Host": "evil.example"}).status_code == 403  # DNS rebinding: refused
