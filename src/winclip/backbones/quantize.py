"""int8 exports: post-training quantization of an fp32 OpenVINO export with NNCF, calibrated on good photos.

`quantize_export(source, out, calibration)` reads an fp32 export (`winclip export --format
openvino`), quantizes both of its graphs (windows and image-only) with NNCF's post-training
quantization (`nncf.quantize`, transformer model type: LayerNorm, Softmax and GELU stay in
floating point; the matrix products and the attention's batched products run in int8), its
statistics collected on the given calibration images (preprocessed, the profile's good photos),
and writes a new export folder whose export.json says `"precision": "int8"` and records the
calibration (count and sha256 of the pixels), NNCF's version and the layers kept in floating
point (`keep_float`: name patterns, mixed precision). OpenVINO runs it (`--runtime openvino`,
precision int8); it is offered only by evidence (winclip.inspection.evidence), never by default.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..images import file_sha256
from .runtime import EXPORT_JSON, IMAGE_MODEL_FILES, MODEL_FILES, read_export

MIN_CALIBRATION = 1
SMOOTH_QUANT_ALPHA = 0.5  # NNCF SmoothQuant strength: 0.5 kept random ViT-B-16+ closest (0.95: twice the error)


def calibration_digest(images: Sequence[torch.Tensor]) -> str:
    """sha256 over the preprocessed calibration pixels (their order included)."""
    h = hashlib.sha256()
    for x in images:
        h.update(x.detach().to(torch.float32).contiguous().numpy().tobytes())
    return f"sha256:{h.hexdigest()}"


def _quantize_graph(xml: Path, out: Path, data: list, keep_float: Sequence[str]) -> int:
    """Quantize one OpenVINO graph; returns how many operations NNCF kept in floating point by `keep_float`."""
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedSmoothQuantParameters

    model = ov.Core().read_model(str(xml))
    ignored = nncf.IgnoredScope(patterns=list(keep_float), validate=False) if keep_float else None
    smooth = AdvancedSmoothQuantParameters(matmul=SMOOTH_QUANT_ALPHA)
    with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars: beside the other progress, not in results
        quantized = _run_nncf(model, data, ignored, smooth)
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return sum(1 for op in model.get_ops() if any(re.search(p, op.get_friendly_name()) for p in keep_float))


def _run_nncf(model: object, data: list, ignored: object, smooth: object) -> object:
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    return nncf.quantize(
        model,
        nncf.Dataset(data),
        model_type=nncf.ModelType.TRANSFORMER,
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(data),
        fast_bias_correction=True,
        ignored_scope=ignored,
        advanced_parameters=AdvancedQuantizationParameters(smooth_quant_alphas=smooth),
    )


def quantize_export(
    source: str | Path,
    out: str | Path,
    calibration: Sequence[torch.Tensor],
    *,
    keep_float: Sequence[str] = (),
) -> dict:
    """Write an int8 copy of the fp32 OpenVINO export `source` into `out` (new or empty); returns its export.json.

    calibration: preprocessed images `(3, H, W)` at the export's input size (the profile's good photos).
    keep_float: regular expressions of OpenVINO operation names left unquantized (mixed precision).
    """
    try:
        import nncf
    except ImportError:
        raise ValueError("int8 needs NNCF: pip install nncf") from None
    export = read_export(source)
    meta = export.meta
    if meta["model_format"] != "openvino" or meta.get("precision", "fp32") != "fp32":
        raise ValueError(
            f"{export.folder}: int8 is made from an fp32 OpenVINO export (winclip export --format openvino)"
        )
    if len(calibration) < MIN_CALIBRATION:
        raise ValueError("int8 calibration needs at least one good photo")
    size = [3, *meta["image_size"]]
    bad = [i for i, x in enumerate(calibration) if list(x.shape) != size]
    if bad:
        raise ValueError(f"calibration image {bad[0]} is {list(calibration[bad[0]].shape)}, the export takes {size}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out}: exists and is not an empty folder")
    data = [x[None].detach().to(torch.float32).contiguous().numpy() for x in calibration]
    kept = 0
    with tempfile.TemporaryDirectory(prefix="winclip-int8-") as tmp:
        for names in (MODEL_FILES, IMAGE_MODEL_FILES):
            src = export.folder / names["openvino"]
            if src.is_file():
                kept += _quantize_graph(src, Path(tmp) / names["openvino"], data, keep_float)
        out.mkdir(parents=True, exist_ok=True)
        for f in sorted(Path(tmp).iterdir()):
            shutil.move(str(f), out / f.name)
    files = sorted(p for p in out.iterdir() if p.name != EXPORT_JSON)
    new = {
        **meta,
        "files": {p.name: {"sha256": file_sha256(p), "bytes": p.stat().st_size} for p in files},
        "precision": "int8",
        "quantization": {
            "tool": f"nncf {nncf.__version__}",
            "method": "post-training (nncf.quantize), transformer model type, mixed preset, SmoothQuant "
            f"alpha {SMOOTH_QUANT_ALPHA}",
            "calibration_images": len(calibration),
            "calibration_sha256": calibration_digest(calibration),
            "keep_float": list(keep_float),
            "kept_float_ops": kept,
            "source": {"folder": str(export.folder), "sha256": meta["files"][meta["model_file"]]["sha256"]},
        },
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (out / EXPORT_JSON).write_text(json.dumps(new, indent=2) + "\n")
    return new
