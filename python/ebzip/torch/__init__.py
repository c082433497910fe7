"""PyTorch add-ons built on the public ebzip API (needs ``torch``; ``import ebzip`` alone never imports it)."""

try:
    import torch as _torch  # noqa: F401
except ImportError as _error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "ebzip.torch needs PyTorch: `pip install torch` (or `pip install \"ebzip[torch]\"`); "
        "the rest of ebzip works without it"
    ) from _error

from .activation_hooks import ActivationCompressor, CompressedActivations  # noqa: E402

__all__ = ["ActivationCompressor", "CompressedActivations"]
