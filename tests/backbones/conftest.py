"""Fixtures of the backbone tests: the tiny model's exports, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny random model exported once as ONNX and as OpenVINO IR (skips without the 'export' extra)."""
    pytest.importorskip("onnxruntime", reason="the export tests need the 'export' extra")
    pytest.importorskip("openvino", reason="the export tests need the 'export' extra")
    from helpers.runtimes import export_tiny

    return export_tiny(tmp_path_factory.mktemp("exports"))
