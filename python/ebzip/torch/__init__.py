"""PyTorch add-ons built on ebzip's public API (needs ``torch``; ``import ebzip`` alone never imports it)."""

try:
    import torch as _torch  # noqa: F401
except ImportError as _e:  # pragma: no cover - depends on the environment
    raise ImportError("ebzip.torch needs PyTorch: pip install 'ebzip[torch]' (the CPU build, torch==2.13.0)") from _e

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
