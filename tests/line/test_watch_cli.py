"""`winclip watch` on the command line: the request it builds, and one clear line (exit 2) for each bad option."""

from __future__ import annotations

import pytest

pytest.importorskip("watchdog", reason="the line tests need the 'line' extra: pip install \"winclip-anomaly[line]\"")

from helpers.line import make_profile
from winclip.cli import build_parser, main
from winclip.cli.requests import WatchRequest


@pytest.fixture
def setup(tmp_path):
    (tmp_path / "in").mkdir()
    return tmp_path / "in", tmp_path / "out", make_profile(tmp_path)


def test_the_options_become_one_request(setup, tmp_path):
    inbox, out, profile = setup
    creds = tmp_path / "creds"
    creds.write_text("cam:pw\n")
    args = build_parser().parse_args(
        ["watch", str(inbox), "--profile", str(profile), "--out", str(out), "--after", "keep", "--queue", "5",
         "--settle-seconds", "0.5", "--poll", "--mqtt", "mqtt://127.0.0.1:1884/plant/l1", "--mqtt-credentials",
         str(creds), "--metrics", "9109"]
    )  # fmt: skip
    r = WatchRequest.of(args)
    c = r.config
    assert (c.inbox, c.out, c.profile, c.after, c.queue, c.settle_s, c.inotify) == (
        inbox, out, profile, "keep", 5, 0.5, False
    )  # fmt: skip
    assert (r.sinks.mqtt.port, r.sinks.mqtt.prefix, r.sinks.mqtt.username, r.sinks.webhook) == (
        1884,
        "plant/l1",
        "cam",
        None,
    )
    assert (r.metrics_port, r.metrics_host) == (9109, "127.0.0.1")
    assert c.database == f"sqlite:///{(out / 'inspections.sqlite').resolve()}"


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--queue", "0"], "argument --queue: must be from 1 to"),  # argparse's line (issue 22: bounded at the edge)
        (["--metrics", "70000"], "argument --metrics: must be from 1 to 65,535"),
        (["--mqtt", "http://x/y"], "use mqtt://"),
        (["--mqtt-credentials", "f"], "go with --mqtt URL"),
        (["--webhook", "ftp://x"], "--webhook ftp://x"),
        (["--settle-seconds", "-1"], "argument --settle-seconds: must be in [0, 3600]"),
    ],
)
def test_a_bad_option_is_one_line_and_exit_status_2(setup, capsys, extra, words):
    inbox, out, profile = setup
    try:
        status = main(["watch", str(inbox), "--profile", str(profile), "--out", str(out), *extra])
    except SystemExit as refused:  # argparse: "winclip watch: error: argument --queue: ..." (after its usage)
        status = refused.code
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and "error: " in err[-1] and words in err[-1]
    assert len(err) == 1 or err[0].startswith("usage: ")


def test_a_missing_folder_and_an_output_inside_it_are_refused(setup, capsys):
    inbox, out, profile = setup
    assert main(["watch", str(inbox / "nope"), "--profile", str(profile), "--out", str(out)]) == 2
    assert "does not exist or is not a folder" in capsys.readouterr().err
    assert main(["watch", str(inbox), "--profile", str(profile), "--out", str(inbox / "out")]) == 2
    assert "inside the input folder" in capsys.readouterr().err
