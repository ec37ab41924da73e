"""MQTT against a real Mosquitto on 127.0.0.1: QoS 1 results, the retained last result, online/offline with a
will, credentials from a file, TLS, and a broker stopped mid-run losing nothing and keeping the order."""

from __future__ import annotations

import io
import json
import subprocess
import time

import pytest

pytest.importorskip("paho.mqtt", reason="the line tests need the 'line' extra: pip install \"winclip-anomaly[line]\"")

from helpers.line import Broker, Subscriber, wait_until
from winclip.line.mqtt import MqttSink, MqttTarget, read_credentials
from winclip.line.outbox import Delivery, DeliveryError, Outbox

STATUS = "factory/line1/bottle/status"


def body(i: int) -> tuple[str, str]:
    mid = f"{i:032x}"
    return mid, json.dumps({"message_id": mid, "profile": "bottle", "n": i})


def test_results_go_out_at_qos1_with_the_last_one_retained_and_the_status_online_then_offline(tmp_path):
    broker = Broker(tmp_path)
    sub = Subscriber(broker.port)
    sink = MqttSink(MqttTarget.parse(broker.url), status_topic=STATUS)
    try:
        assert wait_until(lambda: sub.on("status") == ["online"], 10)
        for i in range(3):
            sink.send(*body(i))  # returns once both PUBACKs came
        assert wait_until(lambda: len(sub.on("last")) == 3, 5)
        assert [m["n"] for m in sub.on("results")] == [0, 1, 2]
        late = Subscriber(broker.port, "factory/line1/bottle/last")  # a dashboard connecting later
        assert wait_until(lambda: late.messages, 5)
        assert [(m["n"], retained) for _, m, retained in late.messages] == [(2, True)]
        late.close()
    finally:
        sink.close()
    try:
        assert wait_until(lambda: sub.on("status")[-1:] == ["offline"], 5)  # a clean goodbye
    finally:
        sub.close()
        broker.stop()


def test_a_lost_connection_publishes_the_will_and_the_sink_reconnects(tmp_path):
    broker = Broker(tmp_path)
    sub = Subscriber(broker.port)
    sink = MqttSink(MqttTarget.parse(broker.url), status_topic=STATUS)
    try:
        assert wait_until(lambda: sub.on("status") == ["online"], 10)
        sink.client.socket().close()  # the network drops: no DISCONNECT is sent
        assert wait_until(lambda: sub.on("status")[:2] == ["online", "offline"], 10)  # the broker's will
        assert wait_until(lambda: sub.on("status")[-1:] == ["online"] and len(sub.on("status")) == 3, 10)
        sink.send(*body(7))
        assert wait_until(lambda: [m["n"] for m in sub.on("results")] == [7], 5)
    finally:
        sink.close()
        sub.close()
        broker.stop()


def test_with_the_broker_stopped_messages_wait_in_the_outbox_and_arrive_in_order_when_it_returns(tmp_path):
    broker = Broker(tmp_path)
    sub = Subscriber(broker.port)
    outbox = Outbox(tmp_path / "o.sqlite")
    sink = MqttSink(MqttTarget.parse(broker.url), status_topic=STATUS, timeout_s=1.0)
    log = io.StringIO()
    delivery = Delivery(outbox, sink, min_backoff_s=0.1, max_backoff_s=0.5, log=log)
    delivery.start()
    try:
        for i in range(5):
            outbox.put(*body(i), ["mqtt"])
        assert wait_until(lambda: outbox.size() == 0, 10)
        broker.stop()  # the line's network is gone for a while
        for i in range(5, 15):
            outbox.put(*body(i), ["mqtt"])
            time.sleep(0.1)
        time.sleep(1.0)
        assert outbox.size() >= 9  # kept on disk (one may be in flight)
        broker.start()
        assert wait_until(lambda: outbox.size() == 0, 30)
        assert wait_until(lambda: len({m["n"] for m in sub.on("results")}) == 15, 15)
    finally:
        delivery.stop()
        delivery.join()
        sink.close()
        sub.close()
        outbox.close()
        broker.stop()
    got = [m["n"] for m in sub.on("results")]
    firsts = sorted(set(got), key=got.index)
    assert firsts == list(range(15))  # in order; a copy may repeat (QoS 1), with its own message id
    for m in sub.on("results"):
        assert m["message_id"] == f"{m['n']:032x}"
    assert "winclip: mqtt: the MQTT broker" in log.getvalue() and "mqtt: delivering again" in log.getvalue()


def test_credentials_come_from_a_file_and_wrong_ones_are_refused(tmp_path):
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "camera", "s3cret:x"], check=True,
                   capture_output=True)  # fmt: skip
    passwd.chmod(0o600)
    broker = Broker(tmp_path, password_file=passwd)
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text("camera:s3cret:x\n")
    bad.write_text("camera:wrong\n")
    sub = Subscriber(broker.port, username="camera", password="s3cret:x")
    ok = MqttSink(MqttTarget.parse(broker.url, credentials=str(good)), status_topic=STATUS)
    refused = MqttSink(MqttTarget.parse(broker.url, credentials=str(bad)), status_topic=STATUS)
    try:
        assert read_credentials(str(good)) == ("camera", "s3cret:x")
        assert wait_until(ok.client.is_connected, 10)
        ok.send(*body(1))
        assert wait_until(lambda: [m["n"] for m in sub.on("results")] == [1], 5)
        time.sleep(0.5)
        assert not refused.client.is_connected()
        with pytest.raises(DeliveryError, match="not connected"):
            refused.send(*body(2))
    finally:
        for c in (ok, refused, sub):
            c.close()
        broker.stop()


def make_certificates(folder) -> dict:
    """A CA and a server certificate for 127.0.0.1 (openssl)."""
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True, cwd=folder)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=winclip test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "server.crt", "-days", "2", "-extfile", "san.cnf")  # fmt: skip
    return {"ca": folder / "ca.crt", "cert": folder / "server.crt", "key": folder / "server.key"}


def test_tls_with_a_trusted_ca_connects_and_an_untrusted_one_does_not(tmp_path):
    if subprocess.run(["which", "openssl"], capture_output=True).returncode:
        pytest.skip("openssl is not installed (needed to make test certificates)")
    certs = make_certificates(tmp_path)
    broker = Broker(tmp_path, tls=certs)
    url = f"mqtts://127.0.0.1:{broker.port}/factory/line1"
    trusted = MqttSink(MqttTarget.parse(url, ca_file=str(certs["ca"])), status_topic=STATUS)
    untrusted = MqttSink(MqttTarget.parse(url), status_topic=STATUS)  # the system's CAs do not know ours
    try:
        assert wait_until(trusted.client.is_connected, 10)
        trusted.send(*body(3))  # PUBACKs over TLS
        time.sleep(0.3)
        assert not untrusted.client.is_connected()
    finally:
        trusted.close()
        untrusted.close()
        broker.stop()


def test_mqtt_options_are_checked(tmp_path):
    t = MqttTarget.parse("mqtt://broker.local/plant/line1/")
    assert (t.host, t.port, t.prefix, t.tls) == ("broker.local", 1883, "plant/line1", False)
    assert MqttTarget.parse("mqtts://b/x").port == 8883 and t.topic("bottle", "last") == "plant/line1/bottle/last"
    for url, words in (
        ("http://b/x", "use mqtt://"),
        ("mqtt://b", "topic without wildcards"),
        ("mqtt://b/line/#", "topic without wildcards"),
        ("mqtt://user:pw@b/x", "--mqtt-credentials FILE"),
    ):
        with pytest.raises(ValueError, match=words):
            MqttTarget.parse(url)
    with pytest.raises(ValueError, match="go with an mqtts:// URL"):
        MqttTarget.parse("mqtt://b/x", ca_file=__file__)
    with pytest.raises(ValueError, match="no such file"):
        MqttTarget.parse("mqtts://b/x", ca_file=str(tmp_path / "nope.pem"))
    (tmp_path / "c").write_text("no colon\n")
    with pytest.raises(ValueError, match="USER:PASSWORD"):
        MqttTarget.parse("mqtt://b/x", credentials=str(tmp_path / "c"))
    assert "s3cret" not in repr(MqttTarget("h", 1, "p", password="s3cret"))
