"""labfolio's research kit: residual / HC / mHC connections, Sinkhorn, ViT and byte-level GPT.

Needs PyTorch (``pip install 'labfolio[kit]'``); the rest of labfolio never imports torch.
"""

try:
    import torch  # noqa: F401  (imported only to fail early with an actionable message)
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "labfolio.kit needs PyTorch, which is not installed. Install the kit extra: "
        "pip install 'labfolio[kit]'"
    ) from exc

from labfolio.kit.connections import ConnectionConfig, connection_diagnostics, make_connection
from labfolio.kit.models import GPT, ViT, GPTConfig, ViTConfig
from labfolio.kit.sinkhorn import sinkhorn

__all__ = [
    "GPT",
    "ConnectionConfig",
    "GPTConfig",
    "ViT",
    "ViTConfig",
    "connection_diagnostics",
    "make_connection",
    "sinkhorn",
]
