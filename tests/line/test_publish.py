"""The station publishes its own results the same way: each recorded prediction becomes a message (valid against
the shipped schema) in an outbox, POSTed to a webhook and published over MQTT, with the record's row id."""

from __future__ import annotations

import hmac
import json

import pytest

pytest.importorskip("fastapi", reason="the line tests need the 'serve' and 'line' extras")
pytest.importorskip("paho.mqtt", reason="the line tests need the 'line' extra: pip install \"winclip-anomaly[line]\"")
jsonschema = pytest.importorskip("jsonschema")

from fastapi.testclient import TestClient

from helpers import TINY
from helpers.line import Broker, Receiver, Subscriber, make_profile, photo_bytes, wait_until
from winclip.cli import build_parser
from winclip.cli.requests import ServeRequest
from winclip.line.messages import schema
from winclip.line.mqtt import MqttTarget
from winclip.line.publish import Publisher, SinkOptions
from winclip.line.webhook import SIGNATURE_HEADER
from winclip.options import ModelSpec
from winclip.service.app import create_app
from winclip.service.config import ServiceConfig

SECRET = b"station-secret-0123456789"


def test_the_station_sends_each_recorded_result_to_mqtt_and_a_webhook(tmp_path):
    make_profile(tmp_path / "profiles")
    broker, receiver = Broker(tmp_path), Receiver(statuses=(503,))
    sub = Subscriber(broker.port, "factory/line1/bottle/results")
    options = SinkOptions(MqttTarget.parse(broker.url), receiver.url, SECRET)
    publisher = Publisher(tmp_path / "outbox.sqlite", options.sinks())
    config = ServiceConfig(profiles=tmp_path / "profiles", model=ModelSpec(TINY, None, device="cpu"))
    try:
        with TestClient(create_app(config, on_recorded=publisher), base_url="http://localhost") as client:
            assert wait_until(lambda: client.get("/health/ready").status_code == 200, 60)
            blobs = [photo_bytes(i) for i in range(3)]
            answer = client.post(
                "/v1/profiles/bottle/predict",
                files=[("images", (f"cam{i}.png", b, "image/png")) for i, b in enumerate(blobs)],
            ).json()["results"]
            refused = client.post("/v1/profiles/bottle/predict", files=[("images", ("x.png", b"junk", "image/png"))])
            assert refused.status_code == 415  # not an image: not recorded, no message
            assert wait_until(lambda: len(receiver.accepted) == 3 and len(sub.on("results")) == 3, 20)
    finally:
        publisher.close()
        sub.close()
        receiver.close()
        broker.stop()
    validator = jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.FormatChecker())
    posted = [json.loads(body) for _, body in receiver.accepted]
    for (headers, body), message in zip(receiver.accepted, posted, strict=True):
        validator.validate(message)
        assert hmac.compare_digest(headers[SIGNATURE_HEADER], "sha256=" + hmac.new(SECRET, body, "sha256").hexdigest())
    assert [m["record_id"] for m in posted] == [a["id"] for a in answer]
    assert [m["score"] for m in posted] == pytest.approx([a["score"] for a in answer])
    assert [(m["path"], m["rel"], m["profile"], m["profile_revision"]) for m in posted] == [
        (f"cam{i}.png", None, "bottle", 1) for i in range(3)
    ]
    assert sub.on("results") == posted  # the same messages, in the same order
    assert len(receiver.attempts) == 4  # the first POST was answered 503 and retried


def test_serve_parses_its_line_options(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    args = build_parser().parse_args(
        ["serve", "--profiles", str(tmp_path / "p"), "--port", "8123", "--mqtt", "mqtt://127.0.0.1:1883/plant",
         "--webhook", "http://127.0.0.1:9/hook", "--webhook-secret-file", str(secret)]
    )  # fmt: skip
    request = ServeRequest.of(args)
    assert request.sinks.mqtt.prefix == "plant" and request.sinks.webhook_secret == SECRET
    assert request.outbox == tmp_path / "p" / "outbox-8123.sqlite"
    plain = ServeRequest.of(build_parser().parse_args(["serve", "--profiles", str(tmp_path / "p")]))
    assert plain.sinks is None and plain.outbox is None
    with pytest.raises(ValueError, match="--webhook-secret-file goes with --webhook"):
        ServeRequest.of(build_parser().parse_args(["serve", "--profiles", "p", "--webhook-secret-file", str(secret)]))
