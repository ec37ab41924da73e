"""`winclip export`: write the vision side as ONNX or OpenVINO IR for `--runtime onnxruntime|openvino`.

Exports image embedding, window embeddings of every --scales size and patch tokens for the backbone's input
size (batch size free), fp32, plus export.json (inputs, outputs, window plan, preprocessing, weights identity,
sha256 of every file), and an image-only graph for the multi-crop views. `winclip predict --runtime
onnxruntime --export-dir DIR --profile P` then scores with it; the text prototypes come from the profile.
`--precision int8 --calibration GOOD_PHOTOS` (OpenVINO) quantizes it with NNCF, its statistics taken on those
photos. Needs the 'export' extra: pip install "winclip-anomaly[export]".
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import TYPE_CHECKING

from ..options import EXPORT_FORMATS
from .common import add_command, add_model_options, image_paths, load_model, method_option
from .requests import ExportRequest

if TYPE_CHECKING:
    from ..model import WinCLIP


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `export` subcommand."""
    p = add_command(subparsers, "export", __doc__)
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS, help="onnx (ONNX Runtime, OpenVINO) or openvino")
    p.add_argument("--out", required=True, help="new (or empty) folder to write")
    p.add_argument(
        "--scales", nargs="+", type=method_option("scales"), default=[2, 3], metavar="K", help="window sizes to export"
    )
    p.add_argument(
        "--calibration", nargs="*", default=[], metavar="IMAGE", help="with --precision int8: good photos of the part"
    )
    add_model_options(p)
    p.set_defaults(func=run, precision="fp32", device="cpu")


def run(args: argparse.Namespace) -> int:
    """Load the backbone (fp32), export (and quantize), print what was written."""
    from ..backbones.export import export_backbone

    request = ExportRequest.of(args)
    int8 = request.model.precision == "int8"
    if int8 and (request.format != "openvino" or not request.calibration):
        raise ValueError("--precision int8 needs --format openvino and --calibration with good photos of the part")
    if not int8 and request.calibration:
        raise ValueError("--calibration goes with --precision int8")
    photos = image_paths(list(request.calibration), "--calibration") if int8 else []
    model = load_model(dataclasses.replace(request.model, precision="fp32"))
    if int8:
        meta = quantized(model, request, photos)
    else:
        meta = export_backbone(model.backbone, request.out, request.format, request.scales)
    for name, rec in meta["files"].items():
        print(f"{rec['sha256']}  {rec['bytes']:>13,}  {name}")
    print(
        f"exported {meta['backbone']} ({meta['weights_id']}) as {request.format} to {request.out}: input "
        f"{meta['inputs'][0]['shape']}, outputs {', '.join(o['name'] for o in meta['outputs'])}",
        file=sys.stderr,
    )
    return 0


def quantized(model: WinCLIP, request: ExportRequest, photos: list[str]) -> dict:
    """The fp32 OpenVINO export in a temporary folder, quantized into `request.out`."""
    import tempfile

    from ..backbones.export import export_backbone
    from ..backbones.quantize import quantize_export
    from ..images import load_image

    pixels = [model.backbone.preprocess(load_image(p, p)) for p in photos]
    with tempfile.TemporaryDirectory(prefix="winclip-export-fp32-") as tmp:
        export_backbone(model.backbone, tmp, "openvino", request.scales)
        return quantize_export(tmp, request.out, pixels)
