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
