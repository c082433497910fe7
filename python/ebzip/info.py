"""``python -m ebzip.info``: which backends were built and which can run here."""

from __future__ import annotations

import os
import platform


def report() -> str:
    import numpy as np

    from . import __version__, _core, api

    lines = [
        f"ebzip {__version__}  (stream format version {api.FORMAT_VERSION})",
        f"python {platform.python_version()}  numpy {np.__version__}  machine {platform.machine()}  cpus {os.cpu_count()}",
        f"CPU backend: built (C++17/OpenMP), threads default {api.get_num_threads()}, zstd {_core.ZSTD_VERSION}",
        "CUDA backend: not built in this version (planned: ebzip._cuda); CUDA tensors go through host memory",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
