"""Compositional prompt ensemble (docs/method.md §1): state words × templates → the prompt sentences. Pure text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

NORMAL_STATES: tuple[str, ...] = (
    "{o}",
    "flawless {o}",
    "perfect {o}",
    "unblemished {o}",
    "{o} without flaw",
    "{o} without defect",
    "{o} without damage",
)
ANOMALOUS_STATES: tuple[str, ...] = (
    "damaged {o}",
    "{o} with flaw",
    "{o} with defect",
    "{o} with damage",
)
TEMPLATES: tuple[str, ...] = (
    "a cropped photo of the {c}.",
    "a cropped photo of a {c}.",
    "a close-up photo of a {c}.",
    "a close-up photo of the {c}.",
    "a bright photo of a {c}.",
    "a bright photo of the {c}.",
    "a dark photo of the {c}.",
    "a dark photo of a {c}.",
    "a jpeg corrupted photo of a {c}.",
    "a jpeg corrupted photo of the {c}.",
    "a blurry photo of the {c}.",
    "a blurry photo of a {c}.",
    "a photo of a {c}.",
    "a photo of the {c}.",
    "a photo of a small {c}.",
    "a photo of the small {c}.",
    "a photo of a large {c}.",
    "a photo of the large {c}.",
    "a photo of the {c} for visual inspection.",
    "a photo of a {c} for visual inspection.",
    "a photo of the {c} for anomaly detection.",
    "a photo of a {c} for anomaly detection.",
)

# Object names that read better spelled out (VisA class folders).
OBJECT_NAMES: Mapping[str, str] = {
    "pcb1": "printed circuit board",
    "pcb2": "printed circuit board",
    "pcb3": "printed circuit board",
    "pcb4": "printed circuit board",
    "macaroni1": "macaroni",
    "macaroni2": "macaroni",
    "pipe_fryum": "pipe fryum",
}
# `winclip eval --object-names`: "clean" spells VisA's folder names out (the default, as before: "pcb1"
# is no word CLIP saw in captions); "raw" keeps the dataset's own names ("pcb1"), which the paper says
# it used ("the object name words available in MVTec-AD and VisA", supplement A), `_` → space either way.
OBJECT_NAME_MAPS: Mapping[str, Mapping[str, str]] = {"clean": OBJECT_NAMES, "raw": {}}

# Task-specific anomalous states of the paper's Table 7 (VisA PCB2, PCB4, pipe fryum). The paper gives
# examples, not its lists: "missing part" and "bad soldering" on a PCB, "burnt" pipe fryum (§4.1,
# §5.4), and docs/method.md §1's "missing component"; these are those examples.
PCB_STATES: tuple[str, ...] = ("{o} with missing part", "{o} with missing component", "{o} with bad soldering")
TASK_STATES: Mapping[str, tuple[str, ...]] = {
    "pcb2": PCB_STATES,
    "pcb4": PCB_STATES,
    "pipe_fryum": ("burnt {o}",),
}


@dataclass(frozen=True)
class PromptSet:
    """State phrases (with `{o}`) and templates (with `{c}`) for one prompt ensemble.

    No anomalous states is the one-class design (Table 3 a): the anomalous prototype is then the
    zero vector, so ascore0 = σ(−<e, t_n>/τ), a decreasing function of the paper's −<f(x), g(s−)>.
    """

    normal_states: tuple[str, ...] = NORMAL_STATES
    anomalous_states: tuple[str, ...] = ANOMALOUS_STATES
    templates: tuple[str, ...] = TEMPLATES

    def __post_init__(self) -> None:
        for field, items, key in (
            ("normal_states", self.normal_states, "{o}"),
            ("anomalous_states", self.anomalous_states, "{o}"),
            ("templates", self.templates, "{c}"),
        ):
            if not items and field != "anomalous_states":
                raise ValueError(f"PromptSet.{field} is empty")
            bad = [s for s in items if key not in s]
            if bad:
                raise ValueError(f"PromptSet.{field}: {bad[0]!r} lacks the placeholder {key}")

    def extended(self, normal_states: Sequence[str] = (), anomalous_states: Sequence[str] = ()) -> PromptSet:
        """This set with extra task-specific states appended (e.g. `{o} with missing component`)."""
        return PromptSet(
            self.normal_states + tuple(s for s in normal_states if s not in self.normal_states),
            self.anomalous_states + tuple(s for s in anomalous_states if s not in self.anomalous_states),
            self.templates,
        )

    def prompts(self, obj: str) -> tuple[list[str], list[str]]:
        """All state × template sentences for object phrase `obj`: (normal, anomalous)."""

        def expand(states: tuple[str, ...]) -> list[str]:
            return [t.format(c=s.format(o=obj)) for s in states for t in self.templates]

        return expand(self.normal_states), expand(self.anomalous_states)


# CLIP's 80 ImageNet templates (Radford et al. 2021), for the paper's Table 1/3
# "+ CLIP's ImageNet prompt ensemble" row: two-class states x these templates.
IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {c}.",
    "a photo of many {c}.",
    "a sculpture of a {c}.",
    "a photo of the hard to see {c}.",
    "a low resolution photo of the {c}.",
    "a rendering of a {c}.",
    "graffiti of a {c}.",
    "a bad photo of the {c}.",
    "a cropped photo of the {c}.",
    "a tattoo of a {c}.",
    "the embroidered {c}.",
    "a photo of a hard to see {c}.",
    "a bright photo of a {c}.",
    "a photo of a clean {c}.",
    "a photo of a dirty {c}.",
    "a dark photo of the {c}.",
    "a drawing of a {c}.",
    "a photo of my {c}.",
    "the plastic {c}.",
    "a photo of the cool {c}.",
    "a close-up photo of a {c}.",
    "a black and white photo of the {c}.",
    "a painting of the {c}.",
    "a painting of a {c}.",
    "a pixelated photo of the {c}.",
    "a sculpture of the {c}.",
    "a bright photo of the {c}.",
    "a cropped photo of a {c}.",
    "a plastic {c}.",
    "a photo of the dirty {c}.",
    "a jpeg corrupted photo of a {c}.",
    "a blurry photo of the {c}.",
    "a photo of the {c}.",
    "a good photo of the {c}.",
    "a rendering of the {c}.",
    "a {c} in a video game.",
    "a photo of one {c}.",
    "a doodle of a {c}.",
    "a close-up photo of the {c}.",
    "a photo of a {c}.",
    "the origami {c}.",
    "the {c} in a video game.",
    "a sketch of a {c}.",
    "a doodle of the {c}.",
    "a origami {c}.",
    "a low resolution photo of a {c}.",
    "the toy {c}.",
    "a rendition of the {c}.",
    "a photo of the clean {c}.",
    "a photo of a large {c}.",
    "a rendition of a {c}.",
    "a photo of a nice {c}.",
    "a photo of a weird {c}.",
    "a blurry photo of a {c}.",
    "a cartoon {c}.",
    "art of a {c}.",
    "a sketch of the {c}.",
    "a embroidered {c}.",
    "a pixelated photo of a {c}.",
    "itap of the {c}.",
    "a jpeg corrupted photo of the {c}.",
    "a good photo of a {c}.",
    "a plushie {c}.",
    "a photo of the nice {c}.",
    "a photo of the small {c}.",
    "a photo of the weird {c}.",
    "the cartoon {c}.",
    "art of the {c}.",
    "a drawing of the {c}.",
    "a photo of the large {c}.",
    "a black and white photo of a {c}.",
    "the plushie {c}.",
    "a dark photo of a {c}.",
    "itap of a {c}.",
    "graffiti of the {c}.",
    "a toy {c}.",
    "itap of my {c}.",
    "a photo of a cool {c}.",
    "a photo of a small {c}.",
    "a tattoo of the {c}.",
)

# Registry of named prompt sets: data, never code (the paper's Table 3 ablation rows).
PROMPT_SETS: Mapping[str, PromptSet] = {
    "winclip": PromptSet(),
    "two-class": PromptSet(("normal {o}",), ("anomalous {o}",), ("a photo of a {c}.",)),
    "states": PromptSet(templates=("a photo of a {c}.",)),
    "imagenet": PromptSet(("normal {o}",), ("anomalous {o}",), IMAGENET_TEMPLATES),
    "one-class": PromptSet(("normal {o}",), (), ("a photo of a {c}.",)),
}


def object_phrase(name: str, overrides: Mapping[str, str] = OBJECT_NAMES) -> str:
    """Class folder name → object phrase: override map first, else `_` → space."""
    return overrides.get(name, name.replace("_", " ").strip())
