"""The first hour's documents: a README that fits on a screen and starts with the two commands, a docs site whose
navigation has a page per topic, and a command-line reference rendered from the parsers themselves (CI builds the
site with `mkdocs build --strict`; nothing here runs mkdocs)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from winclip.cli import SUBCOMMANDS, build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()
TOPICS = ("install", "workflow", "station", "security", "line", "paper", "ray", "offline-weights", "export",
          "performance", "troubleshooting", "method", "api", "cli")  # fmt: skip


def hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def nav_pages() -> list[str]:
    yaml = pytest.importorskip("yaml", reason="reading mkdocs.yml needs PyYAML (the docs extra)")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def walk(node: object) -> list[str]:
        if isinstance(node, str):
            return [node]
        if isinstance(node, list):
            return [p for item in node for p in walk(item)]
        if isinstance(node, dict):
            return [p for value in node.values() for p in walk(value)]
        return []

    return walk(config["nav"])


def test_the_readme_fits_on_a_screen_and_starts_with_the_two_commands():
    lines = README.splitlines()
    assert len(lines) <= 200, len(lines)
    first = README.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line for line in first.splitlines() if line and not line.startswith("#")]
    assert commands[0].startswith("pip install . && winclip predict examples/scratched_plate.png")
    assert commands[1] == "python -m pytest -q"
    assert "python -m pytest -q" in (ROOT / ".ci" / "run").read_text()  # the command CI runs
    for part in ("## Install", "## Three steps", "## Documentation", "## Licence and citation", "docs/inspection_",
                 "download.pytorch.org/whl/cpu", "@inproceedings{jeong2023winclip", "Apache License 2.0"):  # fmt: skip
        assert part in README, part


def test_every_figure_in_the_readme_says_where_it_was_measured():
    install = " ".join(README.split("## Install", 1)[1].split("## ", 1)[0].split())
    assert len(re.findall(r"[\d,]+ MB venv", install)) == 2  # both routes
    assert "measured in a fresh venv on this project's machine, AMD EPYC, 2 cores" in install
    assert "[Install](docs/install.md)" in install  # the commands and what the times include


def test_the_readme_links_into_the_site_and_the_site_has_a_page_per_topic():
    generated = {"cli.md"}
    links = re.findall(r"\]\((docs/[^)#]+)", README)
    assert len(links) >= 12
    for link in links:
        name = link.removeprefix("docs/")
        assert (ROOT / link).is_file() or name in generated, link
    pages = nav_pages()
    assert {f"{topic}.md" for topic in TOPICS} <= set(pages) and "index.md" in pages
    for page in pages:
        assert (DOCS / page).is_file() or page in generated, page


def test_the_command_line_reference_is_rendered_from_the_parsers_without_torch():
    text = hooks().cli_markdown(build_parser())
    for name in SUBCOMMANDS:
        assert f"## `winclip {name}`" in text and f"usage: winclip {name}" in text
    for verb in ("create", "calibrate", "add-good", "show"):
        assert f"### `winclip profile {verb}`" in text
    assert "--target-fpr TARGET_FPR" in text
    code = (
        "import importlib.util, sys; sys.path.insert(0, 'src');"
        "spec = importlib.util.spec_from_file_location('h', 'docs/hooks.py');"
        "h = importlib.util.module_from_spec(spec); spec.loader.exec_module(h);"
        "from winclip.cli import build_parser; h.cli_markdown(build_parser());"
        "print(sorted({'torch', 'open_clip'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"


def test_the_site_build_adds_the_command_line_reference_and_keeps_written_pages(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed")
    from mkdocs.config import load_config
    from mkdocs.structure.files import get_files

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# home\n")
    (tmp_path / "docs" / "security.md").write_text("# Security, as written\n")
    (tmp_path / "mkdocs.yml").write_text(f"site_name: t\ndocs_dir: docs\nhooks: ['{DOCS / 'hooks.py'}']\n")
    config = load_config(str(tmp_path / "mkdocs.yml"))
    files = config.plugins.on_files(get_files(config), config=config)  # as a build runs the hook
    assert files.get_file_from_path("security.md").content_string == "# Security, as written\n"  # kept as it is
    assert "usage: winclip predict" in files.get_file_from_path("cli.md").content_string
