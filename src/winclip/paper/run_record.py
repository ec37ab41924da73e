"""What a later `winclip report` needs to score an evaluation run again without any model (docs/method.md §5).

`winclip eval` writes two files beside results.csv and scores.npz:

- ``run.json``: the dataset layout, its root (absolute) and classes, the method options, the
  patch grid, the evaluation resolution, the backbone, the weights identity, the device, the
  feature-cache folder (``<cache>/<settings>``), the prompt settings and each class's object
  phrase, every row's reference files (relative to the dataset root), and the summary's settings
  and notes.
- ``prototypes.safetensors``: the two text prototypes of every class, ``<class>/normal`` and
  ``<class>/anomalous`` (fp32 ``(D,)``), with the sha256 of the prompt settings in its metadata.

With them and the feature cache, the report scores every row as `winclip eval` did, from cached
features, with a weightless `winclip.method.scorer.Scorer`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..files import atomic_write, digest
from ..model import WinCLIP
from ..options import MethodOptions
from .results import RowResult

if TYPE_CHECKING:  # evaluate imports this module
    from .protocol import EvalPlan

RUN_FILE = "run.json"
PROTOTYPES_FILE = "prototypes.safetensors"
RUN_FORMAT = 1

RowKey = tuple[str, int, int | None]  # class, shots, seed (None for zero-shot)


@dataclass(frozen=True)
class RunRecord:
    """The contents of run.json."""

    dataset: str
    root: Path  # absolute; the CSV file for the manifest layout
    paths_root: Path  # the folder row paths are relative to: root, or the CSV's folder
    classes: tuple[str, ...]
    options: MethodOptions
    grid: tuple[int, int]
    resolution: int | None  # square evaluation size; None = each image's own size
    backbone: str
    weights: str  # BackboneInfo.weights_id: sha256 of the checkpoint, or random:seed=0
    random_weights: bool
    device: str
    feature_cache: Path  # the settings folder holding <sha256>.safetensors
    prompts: str  # sha256 of the prompt settings (normal states, anomalous states, templates)
    objects: dict[str, str]  # class → object phrase of its prompts
    references: dict[RowKey, tuple[str, ...]]
    settings: tuple[tuple[str, str], ...]
    notes: tuple[str, ...]

    def to_json(self) -> dict:
        return {
            "format": RUN_FORMAT,
            "dataset": self.dataset,
            "root": str(self.root),
            "paths_root": str(self.paths_root),
            "classes": list(self.classes),
            "options": dataclasses.asdict(self.options),
            "grid": list(self.grid),
            "eval_resolution": self.resolution,
            "backbone": self.backbone,
            "weights": self.weights,
            "random_weights": self.random_weights,
            "device": self.device,
            "feature_cache": str(self.feature_cache),
            "prompts_sha256": self.prompts,
            "objects": self.objects,
            "rows": [
                {"class": c, "shots": k, "seed": s, "references": list(r)} for (c, k, s), r in self.references.items()
            ],
            "settings": [list(pair) for pair in self.settings],
            "notes": list(self.notes),
        }

    @staticmethod
    def from_json(data: Mapping) -> RunRecord:
        if data.get("format") != RUN_FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {RUN_FORMAT}")
        resolution = data["eval_resolution"]
        return RunRecord(
            dataset=str(data["dataset"]),
            root=Path(data["root"]),
            paths_root=Path(data["paths_root"]),
            classes=tuple(data["classes"]),
            options=MethodOptions(**data["options"]),
            grid=(int(data["grid"][0]), int(data["grid"][1])),
            resolution=None if resolution is None else int(resolution),
            backbone=str(data["backbone"]),
            weights=str(data["weights"]),
            random_weights=bool(data["random_weights"]),
            device=str(data["device"]),
            feature_cache=Path(data["feature_cache"]),
            prompts=str(data["prompts_sha256"]),
            objects={str(k): str(v) for k, v in data["objects"].items()},
            references={
                (str(r["class"]), int(r["shots"]), None if r["seed"] is None else int(r["seed"])): tuple(
                    r["references"]
                )
                for r in data["rows"]
            },
            settings=tuple((str(k), str(v)) for k, v in data["settings"]),
            notes=tuple(data["notes"]),
        )


def save_run(
    out: Path,
    plan: EvalPlan,
    model: WinCLIP,
    *,
    resolution: int | None,
    cache: Path,
    rows: Sequence[RowResult],
    settings: Sequence[tuple[str, str]] = (),
    notes: Sequence[str] = (),
    set_object: Callable[[str], object] | None = None,
) -> RunRecord:
    """Write ``<out>/prototypes.safetensors`` and ``<out>/run.json`` for the finished evaluation of ``plan``.

    The prototypes come from the backbone's cache (text is encoded only for a class whose
    rows were all reused from an earlier run). ``set_object(name)`` sets a class's prototypes as the
    run did (default ``model.set_object``; `evaluate` passes its object names and task states).
    """
    prompts = model.prompts
    tensors, objects = {}, {}
    for data in plan.classes:
        (set_object or model.set_object)(data.name)
        assert model.object_ is not None and model.prototypes_ is not None  # set_object above
        objects[data.name] = model.object_
        normal, anomalous = model.prototypes_
        tensors[f"{data.name}/normal"] = normal.detach().to("cpu", torch.float32).contiguous()
        tensors[f"{data.name}/anomalous"] = anomalous.detach().to("cpu", torch.float32).contiguous()
    prompt_sha = digest([list(prompts.normal_states), list(prompts.anomalous_states), list(prompts.templates)])
    record = RunRecord(
        dataset=plan.dataset,
        root=plan.root.absolute(),
        paths_root=(plan.root.parent if plan.root.is_file() else plan.root).absolute(),
        classes=tuple(c.name for c in plan.classes),
        options=model.options,
        grid=model.backbone.grid,
        resolution=resolution,
        backbone=model.info.name,
        weights=model.info.weights_id,
        random_weights=model.info.checkpoint is None,
        device=str(model.device),
        feature_cache=Path(cache).absolute(),
        prompts=prompt_sha,
        objects=objects,
        references={(r.cls, r.shots, r.seed): r.references for r in rows},
        settings=tuple((str(k), str(v)) for k, v in settings),
        notes=tuple(notes),
    )
    meta = {"prompts_sha256": prompt_sha}
    atomic_write(out / PROTOTYPES_FILE, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    atomic_write(out / RUN_FILE, lambda tmp: tmp.write_text(json.dumps(record.to_json(), indent=1) + "\n"))
    return record


def load_run(run_dir: Path) -> RunRecord:
    """``<run_dir>/run.json``; FileNotFoundError when absent, ValueError naming the file when malformed."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (written by winclip eval; rerun it to add it, rows are reused)")
    try:
        return RunRecord.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"{path}: not a run record ({type(exc).__name__}: {exc})") from None


def load_prototypes(run_dir: Path, record: RunRecord) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Class → (t_n, t_a) from ``<run_dir>/prototypes.safetensors``; ValueError when it does not match run.json."""
    path = Path(run_dir) / PROTOTYPES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing")
    with safe_open(str(path), framework="pt") as handle:
        if (handle.metadata() or {}).get("prompts_sha256") != record.prompts:
            raise ValueError(f"{path}: written for other prompt settings than {RUN_FILE}")
        names = set(handle.keys())
        missing = [c for c in record.classes if f"{c}/normal" not in names or f"{c}/anomalous" not in names]
        if missing:
            raise ValueError(f"{path}: no prototypes for {', '.join(missing)}")
        return {c: (handle.get_tensor(f"{c}/normal"), handle.get_tensor(f"{c}/anomalous")) for c in record.classes}
