"""PyTorch add-ons built on the public ebzip API (needs ``torch``; ``import ebzip`` alone never imports it).

- activation compression in training: :class:`ActivationCompressor`, :class:`CompressedActivations`
- freeze-cache of frozen stages' feature maps: :class:`FeatureCache`, :class:`ProgressiveFreezer`, ...
"""

try:
    import torch as _torch  # noqa: F401
except ImportError as _error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "ebzip.torch needs PyTorch: `pip install \"ebzip[torch]\"` (the CPU build, torch==2.13.0); "
        "the rest of ebzip works without it"
    ) from _error

from .activation_hooks import ActivationCompressor, CompressedActivations  # noqa: E402
from .freeze_cache import (  # noqa: E402
    ChannelAugmentation,
    FeatureCache,
    FreezeCacheError,
    ProgressiveBound,
    Shift,
)
from .freezing import (  # noqa: E402
    GradNormConvergence,
    ProgressiveFreezer,
    freeze_stages,
    split_stages,
    stage_forward_flops,
)

__all__ = [
    "ActivationCompressor", "CompressedActivations",
    "ChannelAugmentation", "FeatureCache", "FreezeCacheError", "ProgressiveBound", "Shift",
    "GradNormConvergence", "ProgressiveFreezer", "freeze_stages", "split_stages", "stage_forward_flops",
]
