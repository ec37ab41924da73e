import subprocess
import sys

import pytest

import winclip
from winclip.cli import build_parser, main


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"winclip {winclip.__version__}"
    assert main([]) == 2
    assert "WinCLIP" in capsys.readouterr().out


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "winclip", "--help"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("usage: winclip")
    assert build_parser().prog == "winclip"


def test_a_missing_extra_is_one_line_naming_the_extra_and_its_install(monkeypatch):
    import sys

    from winclip.cli.common import require_extra

    monkeypatch.setitem(sys.modules, "watchdog", None)  # as if not installed
    with pytest.raises(ValueError) as caught:
        require_extra("watch", "line", ("json", "watchdog"))
    assert str(caught.value) == (
        "winclip watch needs the 'line' extra (watchdog is missing): pip install \"winclip-anomaly[line]\""
    )
    require_extra("watch", "line", ("json",))  # all there: nothing said
