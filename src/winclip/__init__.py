"""WinCLIP / WinCLIP+: zero- and few-shot anomaly classification and segmentation with CLIP."""

from .backbone import BackboneInfo, Features, RandomWeightsWarning, WeightsUnavailableError
from .images import ImageError
from .memory import ReferenceMemory
from .model import DEFAULT_BACKBONE, DEFAULT_PRETRAINED, GridScores, ImageResult, Prediction, WinCLIP
from .prompts import PROMPT_SETS, PromptSet

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_BACKBONE",
    "DEFAULT_PRETRAINED",
    "PROMPT_SETS",
    "BackboneInfo",
    "Features",
    "GridScores",
    "ImageError",
    "ImageResult",
    "Prediction",
    "PromptSet",
    "RandomWeightsWarning",
    "ReferenceMemory",
    "WeightsUnavailableError",
    "WinCLIP",
    "__version__",
]
