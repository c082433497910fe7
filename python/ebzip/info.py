"""``python -m ebzip.info``: which backends were built, which can run here, and the CUDA versions."""

from __future__ import annotations

import os
import platform


def backends() -> dict:
    """What this install holds: built / runnable per backend, and the CUDA versions (compile time, run time)."""
    from . import _core, _device

    cfg = _device.build_config
    cuda = {
        "built": _device.cuda_built(),
        "importable": _device._cuda is not None,
        "runnable": _device.cuda_runnable(),
        "build_option": getattr(cfg, "EBZIP_CUDA", "unknown"),
        "compiler": getattr(cfg, "CUDA_COMPILER", ""),
        "compiler_version": getattr(cfg, "CUDA_COMPILER_VERSION", ""),
        "architectures": getattr(cfg, "CUDA_ARCHITECTURES", ""),
        "runtime": _device._cuda.runtime_info() if _device._cuda is not None else "",
        "import_error": _device._cuda_import_error if _device.cuda_built() else None,
    }
    return {
        "cpu": {"built": True, "runnable": True, "zstd": _core.ZSTD_VERSION},
        "cuda": cuda,
        "shared_path": {"built": _device._shared_path is not None, "runnable": _device._shared_path is not None},
    }


def report() -> str:
    import numpy as np

    from . import __version__, api

    b = backends()
    c = b["cuda"]
    lines = [
        f"ebzip {__version__}  (stream format version {api.FORMAT_VERSION})",
        f"python {platform.python_version()}  numpy {np.__version__}  machine {platform.machine()}  cpus {os.cpu_count()}",
        f"CPU backend: built (C++17/OpenMP), threads default {api.get_num_threads()}, zstd {b['cpu']['zstd']}",
    ]
    if c["built"]:
        state = "can run here" if c["runnable"] else "cannot run here (no GPU visible)"
        if not c["importable"]:
            state = f"built but does not import here ({c['import_error']})"
        lines.append(f"CUDA backend: built (ebzip._cuda, nvcc {c['compiler_version']}, "
                     f"sm {c['architectures'].replace(';', ',')}), {state}")
        if c["runtime"]:
            lines.append(f"  CUDA: {c['runtime']}")
        lines.append("  on the GPU: predictor='lorenzo' or 'interp', abs/rel bounds; everything else (incl. 'auto') "
                     "goes through the CPU driver (same stream format, same bytes)")
    else:
        lines.append(f"CUDA backend: not built (EBZIP_CUDA={c['build_option']}; nvcc not found at build time or "
                     "switched off); CUDA tensors go through host memory")
    sp = b["shared_path"]
    lines.append("shared path: " + ("built (ebzip._shared_path: the CUDA driver's source on Thrust's OpenMP "
                                    "system, used by the tests)" if sp["built"] else "not built (no Thrust headers)"))
    torch_line = _torch_cuda()
    if torch_line:
        lines.append(torch_line)
    return "\n".join(lines)


def _torch_cuda() -> str:
    try:
        import torch
    except ImportError:
        return ""
    return (f"torch {torch.__version__}: CUDA {torch.version.cuda or 'not compiled in'}, "
            f"GPU available: {torch.cuda.is_available()}")


if __name__ == "__main__":
    print(report())
