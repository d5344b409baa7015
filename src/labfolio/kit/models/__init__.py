"""Models of the study, each in one readable file, all taking a ``ConnectionConfig``."""

from labfolio.kit.models.gpt import GPT, GPTConfig
from labfolio.kit.models.vit import ViT, ViTConfig

__all__ = ["GPT", "GPTConfig", "ViT", "ViTConfig"]
