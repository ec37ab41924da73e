import pytest
import torch

from winclip.method.prompts import (
    ANOMALOUS_STATES,
    NORMAL_STATES,
    PROMPT_SETS,
    TEMPLATES,
    PromptSet,
    object_phrase,
)
from winclip.method.zero_shot import prototype


def test_paper_ensemble_sizes_and_wording():
    assert (len(NORMAL_STATES), len(ANOMALOUS_STATES), len(TEMPLATES)) == (7, 4, 22)
    normal, anomalous = PromptSet().prompts("metal nut")
    assert (len(normal), len(anomalous)) == (154, 88)
    assert normal[0] == "a cropped photo of the metal nut."
    assert "a photo of a metal nut with defect for anomaly detection." in anomalous
    assert "a close-up photo of a unblemished metal nut." in normal
    assert len(set(normal)) == 154 and len(set(anomalous)) == 88


def test_object_names():
    assert object_phrase("metal_nut") == "metal nut"
    assert object_phrase("pcb1") == "printed circuit board"
    assert object_phrase("pcb1", {}) == "pcb1"
    assert object_phrase("screw", {"screw": "metal screw"}) == "metal screw"


def test_extra_states_are_appended_once():
    extended = PromptSet().extended(anomalous_states=["{o} with missing component", "damaged {o}"])
    assert extended.anomalous_states == ANOMALOUS_STATES + ("{o} with missing component",)
    assert len(extended.prompts("pcb")[1]) == 5 * 22


def test_prompt_sets_validate_their_placeholders():
    with pytest.raises(ValueError, match="lacks the placeholder"):
        PromptSet(normal_states=("good part",))
    with pytest.raises(ValueError, match="templates is empty"):
        PromptSet(templates=())
    assert PROMPT_SETS["two-class"].prompts("x") == (["a photo of a normal x."], ["a photo of a anomalous x."])


def test_prototypes_are_normalised_means_of_normalised_embeddings():
    table = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([0.0, 1.0]), "c": torch.tensor([0.0, -2.0])}
    encode = lambda texts: torch.stack([table[t] for t in texts])  # noqa: E731
    t_n, t_a = prototype(encode(["a", "b"])), prototype(encode(["c"]))
    torch.testing.assert_close(t_n, torch.tensor([2**-0.5, 2**-0.5]))
    torch.testing.assert_close(t_a, torch.tensor([0.0, -1.0]))
