"""`winclip export`: write the vision side as ONNX or OpenVINO IR for `--runtime onnxruntime|openvino`.

Exports image embedding, window embeddings of every --scales size and patch tokens for the backbone's input
size (batch size free), fp32, plus export.json (inputs, outputs, window plan, preprocessing, weights identity,
sha256 of every file). `winclip predict --runtime onnxruntime --export-dir DIR --profile P` then scores with it;
the text prototypes come from the profile. Needs the 'export' extra: pip install "winclip-anomaly[export]".
"""

from __future__ import annotations

import argparse
import sys

from ..options import EXPORT_FORMATS
from .common import add_command, add_model_options, load_model, method_option
from .requests import ExportRequest


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `export` subcommand."""
    p = add_command(subparsers, "export", __doc__)
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS, help="onnx (ONNX Runtime, OpenVINO) or openvino")
    p.add_argument("--out", required=True, help="new (or empty) folder to write")
    p.add_argument(
        "--scales", nargs="+", type=method_option("scales"), default=[2, 3], metavar="K", help="window sizes to export"
    )
    add_model_options(p)
    p.set_defaults(func=run, precision="fp32", device="cpu")


def run(args: argparse.Namespace) -> int:
    """Load the backbone (fp32), export, print what was written."""
    from ..backbones.export import export_backbone

    request = ExportRequest.of(args)
    model = load_model(request.model)
    meta = export_backbone(model.backbone, request.out, request.format, request.scales)
    for name, rec in meta["files"].items():
        print(f"{rec['sha256']}  {rec['bytes']:>13,}  {name}")
    print(
        f"exported {meta['backbone']} ({meta['weights_id']}) as {request.format} to {request.out}: input "
        f"{meta['inputs'][0]['shape']}, outputs {', '.join(o['name'] for o in meta['outputs'])}",
        file=sys.stderr,
    )
    return 0
