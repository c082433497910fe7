"""ebzip: error-bounded lossy compression of floating-point arrays.

>>> import numpy as np, ebzip
>>> x = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
>>> c = ebzip.compress(x, eb=1e-3, mode="abs")
>>> y = ebzip.decompress(c)
>>> bool(np.abs(x - y).max() <= 1e-3)
True
"""

import os as _os
from importlib.metadata import PackageNotFoundError, version as _version

# OpenMP threads that spin at barriers steal the CPU from a descheduled team
# mate: on a busy 2-core machine, 2 threads ran 3-5x slower than 1 (measured).
# Sleeping waits cost microseconds per call instead. libgomp reads this when
# ebzip._core loads it; a value the user set wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .api import (  # noqa: E402
    FORMAT_VERSION,
    Compressed,
    StreamError,
    compress,
    decompress,
    get_num_threads,
    inspect,
    set_num_threads,
)

try:
    __version__ = _version("ebzip")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "FORMAT_VERSION",
    "Compressed",
    "StreamError",
    "compress",
    "decompress",
    "get_num_threads",
    "inspect",
    "set_num_threads",
]
