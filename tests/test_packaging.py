"""The distribution: a name of our own on PyPI (`winclip` there is an unrelated Windows clipboard package), every
install line and error message naming it with extras it has, and a wheel that installs the `winclip` command."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# `pip install 'NAME[extra]'`, `pip install NAME`, `"NAME[a,b]"` in requirements: what a user would type
INSTALL = re.compile(r"pip install (?:-[-\w]+ )*['\"]?([A-Za-z][\w.-]*)(?:\[([\w,-]+)\])?")
WHERE = ("src", "docs", "benchmarks", "tests", "README.md", ".ci")


def texts() -> dict[Path, str]:
    """Every text file a user or a message could show an install line from."""
    found = {}
    for where in WHERE:
        path = ROOT / where
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            skip = any(part == "__pycache__" or part.endswith(".egg-info") for part in f.parts)
            skip = skip or f == Path(__file__).resolve()  # this file names the wrong lines it looks for
            if f.suffix in {".py", ".md", ".js", ".html", ".sh", ".yml", ".toml", ""} and not skip:
                try:
                    found[f] = f.read_text()
                except UnicodeDecodeError:
                    continue
    return found


def test_the_distribution_name_is_not_the_clipboard_package_and_the_import_name_stays():
    assert PROJECT["name"] == "winclip-anomaly"
    assert PROJECT["scripts"] == {"winclip": "winclip.cli:main"}
    assert (ROOT / "src" / "winclip" / "__init__.py").is_file()


def test_every_install_line_names_this_distribution_and_an_extra_it_has():
    name, extras = PROJECT["name"], set(PROJECT["optional-dependencies"])
    ours = {name, name.replace("-", "_"), "winclip"}
    lines = []
    for path, text in texts().items():
        for m in INSTALL.finditer(text):
            dist, wanted = m.group(1), m.group(2)
            if dist.lower().replace("_", "-") not in {d.replace("_", "-") for d in ours}:
                continue  # another package (torch, ray, ...)
            lines.append(f"{path.relative_to(ROOT)}: {m.group(0)}")
            assert dist == name, f"{path.relative_to(ROOT)}: {m.group(0)!r} installs {dist!r}, not {name!r}"
            for extra in (wanted or "").split(","):
                assert not extra or extra in extras, f"{path.relative_to(ROOT)}: no extra {extra!r} in {sorted(extras)}"
    assert len(lines) >= 8, lines  # the messages of serve, ray, export and the docs were found
    for dep in PROJECT["optional-dependencies"]["test"]:
        if dep.split("[")[0] in ours:
            assert dep.startswith(f"{name}["), dep
    stale = [p for p, t in texts().items() if re.search(r"pip install ['\"]?winclip\[", t)]
    assert stale == []
    shown = [p for p, t in texts().items() if p.parts[len(ROOT.parts)] in ("README.md", "docs", "src")]
    assert len(shown) > 50 and not [p for p in shown if "pip install 'winclip" in texts()[p]]  # the grep


@pytest.mark.slow
def test_the_built_wheel_is_named_for_pypi_and_installs_the_winclip_command(tmp_path):
    source = tmp_path / "source"  # a copy: building writes an egg-info folder beside the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
        capture_output=True, text=True, cwd=source,
    )  # fmt: skip
    if built.returncode != 0 and "No module named" in built.stderr:
        pytest.skip(f"cannot build a wheel here: {built.stderr.strip().splitlines()[-1]}")
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("*.whl")
    assert wheel.name.startswith("winclip_anomaly-")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = zf.read(info).decode()
        entry = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "Name: winclip-anomaly" in meta.splitlines()
    assert {"serve", "ray", "export", "docs", "test"} <= set(re.findall(r"^Provides-Extra: (\S+)$", meta, re.M))
    assert "winclip = winclip.cli:main" in entry
    assert "winclip/cli/__init__.py" in names and "winclip/service/static/app.js" in names
