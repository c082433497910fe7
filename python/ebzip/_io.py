"""Safe output files: never the input, never half-written.

:func:`atomic_output` hands out a temporary path in the destination's folder
and moves it into place with :func:`os.replace` only when the work succeeded;
on any error, Ctrl-C (KeyboardInterrupt) or SIGTERM included, the temporary
file is removed and the destination is left as it was. Only regular files
are replaced: a character device (``/dev/null``) or FIFO is written into, and
anything else that is not a regular file is refused. The output gets the
permissions a new file would (0666 less the umask), or those of the file it
replaces.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import tempfile


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5_file(path: str) -> bool:
    """True for a regular file holding HDF5's signature at 0, 512, 1024, 2048, ... (a user block may be any
    power of two >= 512 bytes). A pipe or FIFO is never opened here: reading it would consume its data."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # checked before opening: a FIFO's open waits for a writer
            return False
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            offset = 0
            while offset + 8 <= size:
                f.seek(offset)
                if f.read(8) == HDF5_SIGNATURE:
                    return True
                offset = max(512, 2 * offset)
    except OSError:
        return False
    return False


class OutputError(ValueError):
    """The output path cannot be used (exists, is the input, folder missing)."""


def same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def writes_into(path: str) -> bool:
    """True for an existing character device or FIFO (``/dev/null``, a named pipe): an output
    there is written into, like a shell redirection, and the node itself is never replaced."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def check_output(path: str, inputs=(), force: bool = False) -> None:
    """Refuse an output that is one of the inputs, is not a regular file (a folder, a block device,
    a socket; a character device or FIFO is written into), or exists (unless ``force``)."""
    for src in inputs:
        if src and src != "-" and os.path.exists(path) and same_file(src, path):
            raise OutputError(f"refusing to overwrite the input file {src}")
        if src and src != "-" and os.path.realpath(src) == os.path.realpath(path):
            raise OutputError(f"refusing to overwrite the input file {src}")
    if os.path.isdir(path):
        raise OutputError(f"{path} is a folder; give a file name")
    if writes_into(path):
        return
    if os.path.exists(path) and not os.path.isfile(path):
        raise OutputError(f"{path} is not a regular file; ebzip replaces only regular files (and writes into "
                          "character devices such as /dev/null, and FIFOs)")
    if os.path.exists(path) and not force:
        raise OutputError(f"{path} exists; pass --force to replace it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputError(f"the folder {folder} does not exist")


def _umask() -> int:
    try:  # Linux says it without changing it
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it
    os.umask(mask)
    return mask


def _final_mode(path: str) -> int:
    """The permissions an output gets: those of the file it replaces (--force), else what open()
    would give a new file (0666 less the umask); the temporary file starts at 0600."""
    try:
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode) & 0o777
    except OSError:
        pass
    return 0o666 & ~_umask()


class _TermAsInterrupt:
    """Turn SIGTERM into KeyboardInterrupt while an output is being written (main thread only)."""

    def __enter__(self):
        self._old = None
        try:
            self._old = signal.signal(signal.SIGTERM, self._handler)
        except (ValueError, OSError):  # not the main thread
            self._old = None
        return self

    @staticmethod
    def _handler(signum, frame):
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
        return False


@contextlib.contextmanager
def atomic_output(path: str, inputs=(), force: bool = False, suffix: str = ""):
    """Yield a temporary path beside ``path``; on success it replaces ``path``.

    A symbolic link to a regular file is followed: the file is replaced and
    the link kept. A character device or FIFO is never replaced: the
    temporary file (in the system's temporary folder, not beside the device)
    is copied into it.
    """
    if os.path.islink(path) and os.path.isfile(path):
        path = os.path.realpath(path)
    check_output(path, inputs, force)
    if writes_into(path):  # (/dev/stdout too, a link to the process's pipe)
        fd, tmp = tempfile.mkstemp(suffix=f".ebzip-tmp{suffix}")
        os.close(fd)
        try:
            with _TermAsInterrupt():
                yield tmp
                with open(tmp, "rb") as src, open(path, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=f".ebzip-tmp{suffix}", dir=folder)
    os.close(fd)
    try:
        os.chmod(tmp, _final_mode(path))
        with _TermAsInterrupt():
            yield tmp
            check_output(path, inputs, force)  # still true after the (maybe long) work?
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
