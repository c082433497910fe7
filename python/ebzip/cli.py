"""The ``ebzip`` command line (click).

``ebzip`` alone (or ``ebzip demo``) runs the demo; ``ebzip info`` reports the
build. HDF5 files: ``compress``, ``decompress``, ``info FILE``, ``verify``,
``estimate`` (need ``pip install 'ebzip[hdf5]'``). Raw binary arrays, with the
flags SZ3 and zfp users know: ``-i IN -o OUT -f|-d -3 nx ny nz -M REL -R 1e-3``
(``-A``/``-a`` for an absolute bound), ``-`` for stdin/stdout. See docs/cli.md.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
import sys

import click

from . import _arrays, api

MODE_CHOICE = click.Choice(["abs", "rel", "psnr"], case_sensitive=False)
RAW_DTYPES = {"float32": "float32", "f32": "float32", "float": "float32", "float64": "float64", "f64": "float64",
              "double": "float64", "float16": "float16", "f16": "float16", "bfloat16": "bfloat16",
              "bf16": "bfloat16"}
STREAM_MAGIC = b"EBZP"


# ------------------------------------------------------------------ helpers


def _need_hdf5():
    try:
        from . import h5file  # noqa: F401
    except ImportError:
        raise click.ClickException("HDF5 files need h5py: pip install 'ebzip[hdf5]'") from None
    return h5file


def _is_hdf5(path: str) -> bool:
    from ._io import is_hdf5_file

    return is_hdf5_file(path)


def _is_stream(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == STREAM_MAGIC
    except OSError:
        return False


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def _fmt_shape(shape) -> str:
    return "x".join(str(s) for s in shape) if shape else "scalar"


def _fmt_ratio(r: float) -> str:
    return "inf" if not math.isfinite(r) else f"{r:.2f}"


def _table(rows: list[list[str]], header: list[str], right=()) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]).rstrip()


class _Warn:
    def __init__(self):
        self.count = 0

    def __call__(self, msg: str):
        self.count += 1
        click.echo(f"warning: {msg}", err=True)


def _progress_default(progress):
    return sys.stderr.isatty() if progress is None else progress


def _resolve_bound(eb, mode, M, A, R, a_zfp, required=True):
    """Combine --eb/--mode with SZ3's -M/-A/-R and zfp's -a into (eb, mode)."""
    given = [(v, m, flag) for v, m, flag in ((A, "abs", "-A"), (a_zfp, "abs", "-a"), (R, "rel", "-R")) if v is not None]
    if eb is not None and given:
        raise click.UsageError("give the bound once: --eb, or -A/-R (SZ3), or -a (zfp)")
    if len(given) > 1:
        raise click.UsageError("give one of -A, -R, -a")
    if mode and M and mode.lower() != M.lower():
        raise click.UsageError(f"--mode {mode} and -M {M} disagree")
    mode = (mode or M or "").lower() or None
    hint = "--eb"
    if given:
        value, implied, hint = given[0]
        if mode and mode != implied:
            raise click.UsageError(f"-M {mode.upper()} does not go with the {implied} bound flag")
        eb, mode = value, implied
    if eb is None:
        if required:
            raise click.UsageError("give a bound: --eb VALUE [--mode rel|abs|psnr] (or -M REL -R VALUE, -A VALUE)")
        return None, mode or "rel"
    mode = mode or "rel"
    if not math.isfinite(eb) or eb < 0 or (mode == "psnr" and eb <= 0):
        raise click.BadParameter(f"the bound must be finite and >= 0 (> 0 dB for psnr); got {eb:g}",
                                 param_hint=hint)
    return eb, mode


def _raw_dims(d1, d2, d3, d4):
    dims = [d for d in (d1, d2, d3, d4) if d is not None and d != ()]  # (-1 0 is given, and wrong)
    if len(dims) > 1:
        raise click.UsageError("give one of -1, -2, -3, -4")
    if not dims:
        return None
    d = dims[0] if isinstance(dims[0], tuple) else (dims[0],)
    if any(n <= 0 for n in d):
        raise click.BadParameter("dimensions must be positive", param_hint="-1/-2/-3/-4")
    return tuple(reversed(d))  # SZ3/zfp order: fastest-varying first; numpy shape: slowest first


def _raw_dtype(f, d, dtype):
    picks = [x for x, on in (("float32", f), ("float64", d)) if on]
    if dtype:
        name = RAW_DTYPES.get(dtype.lower())
        if name is None:
            raise click.BadParameter(f"unknown dtype {dtype!r}", param_hint="--dtype")
        picks.append(name)
    if len(set(picks)) > 1:
        raise click.UsageError("give one of -f, -d, --dtype")
    return picks[0] if picks else "float32"


def _stdio(name: str):
    """The binary stream under stdin or stdout (the path '-'), or a clear error where it is closed."""
    stream = getattr(sys, name)
    if stream is None:  # the process started with it closed (`<&-`, `>&-`): Python gives None
        raise click.ClickException(f"standard {'input' if name == 'stdin' else 'output'} is closed; "
                                   "give a file instead of '-'")
    return stream.buffer


def _piped(path: str) -> bytes | None:
    """The bytes of '-' (stdin) or of any input that is not a regular file (a pipe, a FIFO, /dev/stdin,
    ``<(...)``), read once, since such an input cannot be reopened or measured; None for a regular file."""
    if path == "-":
        return _stdio("stdin").read()
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise click.ClickException(f"no such file: {path}") from None
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        raise click.ClickException(f"{path} is a folder")
    with open(path, "rb") as f:
        return f.read()


def _read_stream(path: str) -> bytes | None:
    """An ebzip stream's bytes from a file, '-' or a pipe (read once); None where it is no stream."""
    data = _piped(path)
    if data is None:
        if not _is_stream(path):
            return None
        with open(path, "rb") as f:
            data = f.read()
    return data if data[:4] == STREAM_MAGIC else None


def _load_raw(path: str, dtype: str, shape):
    import numpy as np

    store = np.dtype(np.uint16) if dtype == "bfloat16" else np.dtype(dtype)
    n = math.prod(shape)
    data = _piped(path)
    size = os.path.getsize(path) if data is None else len(data)
    if size != n * store.itemsize:
        raise click.ClickException(
            f"{path}: {size} bytes, but {dtype} {_fmt_shape(shape)} needs {n * store.itemsize}; "
            "check the dimensions (-1..-4, fastest-varying first) and -f/-d")
    if data is not None:
        return np.frombuffer(data, dtype=store).reshape(shape)
    if n == 0:
        return np.zeros(shape, dtype=store)
    return np.memmap(path, dtype=store, mode="r", shape=shape)


def _write_output_bytes(out: str, inputs, force: bool, chunks):
    """Write an iterable of bytes-like objects to ``out`` ('-': stdout) atomically."""
    if out == "-":
        stdout = _stdio("stdout")
        for c in chunks:
            stdout.write(memoryview(c).cast("B"))
        stdout.flush()
        return
    from ._io import atomic_output, check_output, writes_into

    if writes_into(out):  # /dev/null, a FIFO: written into as it comes, never replaced
        check_output(out, inputs, force)
        with open(out, "wb") as f:
            for c in chunks:
                f.write(memoryview(c).cast("B"))
        return
    with atomic_output(out, inputs, force) as tmp:
        with open(tmp, "wb") as f:
            for c in chunks:
                f.write(memoryview(c).cast("B"))


def _errors(fn):
    """Turn expected failures into a clear message and a non-zero exit (no traceback)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ._io import OutputError

        try:
            return fn(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except BrokenPipeError:  # the reader of stdout went away (| head): stop quietly, as Unix tools do
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (no second error at exit)
            raise click.exceptions.Exit(1) from None
        except api.StreamError as e:
            raise click.ClickException(f"not a valid ebzip stream: {e}") from None
        except OutputError as e:
            raise click.ClickException(str(e)) from None
        except FileNotFoundError as e:
            raise click.ClickException(str(e) if e.filename is None else f"no such file: {e.filename}") from None
        except ImportError as e:
            raise click.ClickException(str(e)) from None
        except (ValueError, TypeError, OSError) as e:
            raise click.ClickException(str(e)) from None

    return wrapper


def _echo_report(msg: str, to_stderr: bool = False):
    click.echo(msg, err=to_stderr)


# ------------------------------------------------------------------ the group


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ebzip", prog_name="ebzip", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx):
    """Error-bounded lossy compression of floating-point arrays.

    Without a command, runs the demo. HDF5 files: compress, decompress, info,
    verify, estimate. Raw binary arrays: the same commands with -i/-o and the
    SZ3/zfp flags (-f/-d, -1..-4, -M, -A, -R, -a). See docs/cli.md.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(demo)


@cli.command()
@click.option("--size", type=int, default=256, show_default=True, help="grid edge of the simulation")
@click.option("--snapshots", type=int, default=32, show_default=True, help="snapshots stacked into a 3-D field")
@click.option("--threads", type=int, default=None, help="CPU threads (default: all)")
@_errors
def demo(size, snapshots, threads):
    """Compress a simulated field at several bounds and report the results."""
    from .demo import run_demo

    run_demo(size=size, snapshots=snapshots, threads=threads)


def _describe_interp(interp: dict, dtype: str) -> str:
    """The interpolation settings a stream's header holds, in words."""
    import numpy as np

    stencil = ("linear", "cubic (linear edges)", "cubic (quadratic edges)")[interp["stencil"]]
    words = [f"interpolation {stencil}", f"axis order {','.join(map(str, interp['order']))}",
             f"level bounds alpha {interp['alpha']:g} beta {interp['beta']:g}"]
    if interp.get("fill"):
        store = _arrays.storage_dtype(dtype)
        bits = np.array([interp["fill_bits"]], f"<u{store.itemsize}").view(store)
        words.append(f"fill value {_arrays.as_float64(bits, dtype)[0]:g}")
    return ", ".join(words)


@cli.command()
@click.argument("file", required=False)
@_errors
def info(file):
    """Report the ebzip build; with FILE, what an HDF5 file or ebzip stream holds.

    For an HDF5 file, one row per dataset: shape, dtype, filters, the ebzip
    bound and predictor, stored size and ratio.
    """
    if file is None:
        from .info import report

        click.echo(report())
        return
    if not os.path.exists(file):
        raise click.ClickException(f"no such file: {file}")
    data = None if _is_hdf5(file) else _read_stream(file)
    if data is not None:
        head = api.inspect(data)
        size = len(data)
        import numpy as np

        item = 2 if head["dtype"] in ("float16", "bfloat16") else np.dtype(head["dtype"]).itemsize
        orig = math.prod(head["shape"]) * item
        click.echo(f"{file}: ebzip stream (format {head['format_version']})")
        click.echo(f"  shape {_fmt_shape(head['shape'])}  dtype {head['dtype']}  mode {head['mode']} "
                   f"{head['eb_param']:g} (abs {head['eb_abs']:.6g})  predictor {head['pipeline']}")
        click.echo(f"  {_fmt_bytes(orig)} -> {_fmt_bytes(size)}, ratio {_fmt_ratio(orig / size if size else math.inf)}")
        if head.get("interp"):
            click.echo(f"  {_describe_interp(head['interp'], head['dtype'])}")
        return
    if not _is_hdf5(file):
        raise click.ClickException(f"{file} is neither an HDF5 file nor an ebzip stream")
    h5file = _need_hdf5()
    rows = h5file.file_info(file)
    table = [[r.path, _fmt_shape(r.shape), r.dtype, r.filter, r.bound or "-", r.predictor or "-",
              _fmt_bytes(r.stored_nbytes), _fmt_ratio(r.ratio) if r.original_nbytes else "-"] for r in rows]
    click.echo(_table(table, ["dataset", "shape", "dtype", "filters", "bound", "predictor", "stored", "ratio"],
                      right={6, 7}))
    orig = sum(r.original_nbytes for r in rows)
    stored = sum(r.stored_nbytes for r in rows)
    from . import h5

    plug = "plugin loaded" if h5.plugin_available() else "no plugin: read with ebzip / ebzip.h5.read"
    click.echo(f"{len(rows)} datasets, {_fmt_bytes(orig)} of data in {_fmt_bytes(stored)} "
               f"(ratio {_fmt_ratio(orig / stored if stored else math.inf)}); ebzip filter id {h5.FILTER_ID}, {plug}")


# shared options ----------------------------------------------------------


def _bound_options(fn):
    for dec in reversed([
        click.option("--eb", type=float, default=None, help="error bound (with --mode)"),
        click.option("--mode", type=MODE_CHOICE, default=None,
                     help="abs, rel (fraction of the value range; default) or psnr (dB)"),
        click.option("-M", "M", type=MODE_CHOICE, default=None, help="SZ3: error bound mode ABS|REL|PSNR"),
        click.option("-A", "A", type=float, default=None, help="SZ3: absolute bound"),
        click.option("-R", "R", type=float, default=None, help="SZ3: value-range relative bound"),
        click.option("-a", "a_zfp", type=float, default=None, help="zfp: absolute tolerance"),
    ]):
        fn = dec(fn)
    return fn


def _raw_options(fn):
    for dec in reversed([
        click.option("-f", "f32", is_flag=True, help="raw input: float32"),
        click.option("-d", "f64", is_flag=True, help="raw input: float64"),
        click.option("--dtype", default=None, help="raw input: float32, float64, float16 or bfloat16"),
        click.option("-1", "d1", type=int, default=None, metavar="NX", help="raw input: 1-D"),
        click.option("-2", "d2", type=int, nargs=2, default=None, metavar="NX NY", help="raw input: 2-D"),
        click.option("-3", "d3", type=int, nargs=3, default=None, metavar="NX NY NZ",
                     help="raw input: 3-D, fastest-varying first (numpy shape NZ, NY, NX)"),
        click.option("-4", "d4", type=int, nargs=4, default=None, metavar="NX NY NZ NW", help="raw input: 4-D"),
    ]):
        fn = dec(fn)
    return fn


def _pick_paths(pos, i, o, z, which):
    """Positional IN OUT, or -i/-o (and SZ3's -z for the compressed file)."""
    pos = list(pos)
    if len(pos) > 2:
        raise click.UsageError(f"too many paths: {' '.join(pos)}")
    src = i or (pos.pop(0) if pos and not (which == "decompress" and z) else None)
    if which == "compress":
        if z and o:  # SZ3 would also decompress to -o; ebzip does one thing: say how, never drop -z
            raise click.UsageError(f"compress writes the compressed file once: -z {z} (as SZ3) or -o {o}, not "
                                   f"both; then 'ebzip decompress -z {z} -o {o}' for the decompressed copy")
        dst = o or z or (pos.pop(0) if pos else None)
    elif z:  # SZ3: -z is the compressed input; -i there names the original (for its statistics), not read here
        if len(pos) > (0 if o else 1):
            raise click.UsageError(f"-z {z} names the compressed input; give only OUT (or -o OUT), not {pos[0]}")
        src = z
        dst = o or (pos.pop(0) if pos else None)
    else:
        dst = o or (pos.pop(0) if pos else None)
    if pos:
        raise click.UsageError(f"unexpected argument: {pos[0]}")
    if not src:
        raise click.UsageError("missing the input: IN (or -i IN)")
    if not dst:
        raise click.UsageError("missing the output: OUT (or -o OUT)")
    if src == "-":
        _stdio("stdin")  # closed: say so before any work
    if dst == "-":
        _stdio("stdout")
    return src, dst


@cli.command()
@click.argument("paths", nargs=-1, metavar="IN OUT")
@_bound_options
@_raw_options
@click.option("-i", "i", default=None, help="input file ('-' for stdin)")
@click.option("-o", "o", default=None, help="output file ('-' for stdout)")
@click.option("-z", "z", default=None, help="SZ3/zfp: the compressed file (same as -o here)")
@click.option("--include", multiple=True, metavar="PATTERN", help="HDF5: compress only matching datasets")
@click.option("--exclude", multiple=True, metavar="PATTERN", help="HDF5: copy matching datasets unchanged")
@click.option("--eb-for", multiple=True, metavar="PATTERN=VALUE[:MODE]", help="HDF5: a bound for matching datasets")
@click.option("--force", is_flag=True, help="replace an existing output")
@click.option("--threads", type=int, default=None, help="CPU threads (default: all)")
@click.option("--dask-scheduler", default=None, metavar="ADDRESS",
              help="HDF5: compress chunks on this dask.distributed scheduler (workers read IN themselves)")
@click.option("--progress/--no-progress", default=None, help="progress bar (default: when stderr is a terminal)")
@click.option("-q", "--quiet", is_flag=True, help="no report")
@_errors
def compress(paths, eb, mode, M, A, R, a_zfp, f32, f64, dtype, d1, d2, d3, d4, i, o, z, include, exclude, eb_for,
             force, threads, dask_scheduler, progress, quiet):
    """Compress an HDF5 file (every float dataset) or a raw binary array.

    \b
    HDF5:  ebzip compress IN.h5 OUT.h5 --eb 1e-3 --mode rel [--include P] [--exclude P] [--eb-for P=V]
    raw:   ebzip compress -i IN.f32 -o OUT.ebz -f -3 NX NY NZ -M REL -R 1e-3     ('-' for stdin/stdout)
    """
    src, dst = _pick_paths(paths, i, o, z, "compress")
    eb, mode = _resolve_bound(eb, mode, M, A, R, a_zfp)
    if threads is not None:
        api.set_num_threads(threads)
    shape = _raw_dims(d1, d2, d3, d4)
    raw = _is_raw(src, shape, f32, f64, dtype, include, exclude, eb_for, dask_scheduler, dst)
    if not raw:
        if not os.path.exists(src):
            raise click.ClickException(f"no such file: {src}")
        if not _is_hdf5(src):
            raise click.ClickException(f"{src} is not an HDF5 file (for a raw binary array give its dimensions: "
                                       "-f|-d and -1/-2/-3/-4)")
        h5file = _need_hdf5()
        warn = _Warn()
        try:
            reports = h5file.compress_file(src, dst, eb, mode, include=include, exclude=exclude, eb_for=eb_for,
                                           threads=threads, scheduler=dask_scheduler, force=force,
                                           progress=_progress_default(progress), warn=warn)
        except h5file.PatternError as e:
            raise click.BadParameter(str(e), param_hint="pattern") from None
        if not quiet:
            _print_compress_reports(src, dst, reports)
        return
    name = _raw_dtype(f32, f64, dtype)
    x = _load_raw(src, name, shape)
    import time

    t0 = time.perf_counter()
    c = api.compress(x, eb, mode, dtype="bfloat16" if name == "bfloat16" else None)
    secs = time.perf_counter() - t0
    _write_output_bytes(dst, [src], force, [c])
    if not quiet:
        mbs = c.original_nbytes / 1e6 / secs if secs > 0 else math.inf
        bound = f"{c.mode} {c.eb:g}" + ("" if c.mode == "abs" else f" (abs {c.eb_abs:.4g})")
        _echo_report(f"{src} -> {dst}: {name} {_fmt_shape(c.shape)}, {bound}, "
                     f"{_fmt_bytes(c.original_nbytes)} -> {_fmt_bytes(c.nbytes)}, ratio {c.ratio:.2f}, "
                     f"{mbs:.0f} MB/s", to_stderr=dst == "-")


def _is_raw(src, shape, f32, f64, dtype, include, exclude, eb_for, dask_scheduler=None, dst=None) -> bool:
    """Whether compress/estimate treat IN as a raw binary array (else HDF5), refusing what does not apply."""
    raw = bool(shape is not None or f32 or f64 or dtype or src == "-" or dst == "-")
    if raw and (include or exclude or eb_for or dask_scheduler):
        raise click.UsageError("--include/--exclude/--eb-for/--dask-scheduler apply to HDF5 files")
    if raw and shape is None:
        raise click.UsageError("a raw binary input needs its dimensions: -1 NX | -2 NX NY | -3 NX NY NZ | -4 ...")
    return raw


def _print_compress_reports(src, dst, reports):
    rows = [[r.path, _fmt_shape(r.shape), r.dtype, r.bound, _fmt_bytes(r.original_nbytes), _fmt_bytes(r.stored_nbytes),
             _fmt_ratio(r.ratio), f"{r.original_nbytes / 1e6 / r.seconds:.0f}" if r.seconds > 0 else "-"]
            for r in reports]
    if rows:
        click.echo(_table(rows, ["dataset", "shape", "dtype", "bound", "original", "stored", "ratio", "MB/s"],
                          right={4, 5, 6, 7}))
    orig = sum(r.original_nbytes for r in reports)
    stored = sum(r.stored_nbytes for r in reports)
    click.echo(f"{src} -> {dst}: {len(reports)} float dataset(s) compressed, {_fmt_bytes(orig)} -> "
               f"{_fmt_bytes(stored)} (ratio {_fmt_ratio(orig / stored if stored else math.inf)}); "
               f"everything else copied unchanged")


@cli.command()
@click.argument("paths", nargs=-1, metavar="IN OUT")
@click.option("-i", "i", default=None, help="input file ('-' for stdin)")
@click.option("-o", "o", default=None, help="output file ('-' for stdout)")
@click.option("-z", "z", default=None, help="SZ3/zfp: the compressed input (then -i, SZ3's original, is not read)")
@click.option("--force", is_flag=True, help="replace an existing output")
@click.option("--threads", type=int, default=None, help="CPU threads (default: all)")
@click.option("--progress/--no-progress", default=None, help="progress bar (default: when stderr is a terminal)")
@click.option("-q", "--quiet", is_flag=True, help="no report")
@_raw_options
@_bound_options
@_errors
def decompress(paths, i, o, z, force, threads, progress, quiet, f32, f64, dtype, d1, d2, d3, d4, **_bound):
    """Decompress an HDF5 file (ebzip datasets stored plain) or an ebzip stream to a raw binary array.

    SZ3's decompression flags are accepted: -f/-d/--dtype and -1..-4 must agree with the
    stream (it records both), -M/-A/-R/-a are not needed (it records its bound).
    """
    src, dst = _pick_paths(paths, i, o, z, "decompress")
    shape, given_dtype = _raw_dims(d1, d2, d3, d4), (f32 or f64 or dtype) and _raw_dtype(f32, f64, dtype)
    if threads is not None:
        api.set_num_threads(threads)
    if src != "-" and not os.path.exists(src):
        raise click.ClickException(f"no such file: {src}")
    if src != "-" and _is_hdf5(src):
        if dst == "-":
            raise click.UsageError("an HDF5 output cannot go to stdout")
        if shape is not None or given_dtype:
            raise click.UsageError("-f/-d/--dtype and -1..-4 apply to raw streams, not HDF5 files")
        h5file = _need_hdf5()
        reports = h5file.decompress_file(src, dst, force=force, progress=_progress_default(progress), warn=_Warn())
        if not quiet:
            rows = [[r.path, _fmt_shape(r.shape), r.dtype, r.bound, _fmt_bytes(r.original_nbytes)] for r in reports]
            if rows:
                click.echo(_table(rows, ["dataset", "shape", "dtype", "bound", "size"], right={4}))
            click.echo(f"{src} -> {dst}: {len(reports)} ebzip dataset(s) decompressed; everything else copied "
                       "unchanged")
        return
    data = _read_stream(src)
    if data is None:
        raise click.ClickException(f"{src} is neither an HDF5 file nor an ebzip stream"
                                   + ("" if src == "-" or os.path.isfile(src) else " (an HDF5 input must be a file)"))
    head = api.inspect(data)
    if shape is not None and tuple(shape) != tuple(head["shape"]):
        raise click.UsageError(f"the dimensions given ({_fmt_shape(shape)} as a numpy shape) are not the stream's "
                               f"({_fmt_shape(head['shape'])})")
    if given_dtype and given_dtype != head["dtype"]:
        raise click.UsageError(f"-f/-d/--dtype say {given_dtype}; the stream holds {head['dtype']}")
    y = api.decompress(data, raw_bf16=True)
    _write_output_bytes(dst, [src], force, [y.reshape(-1).view("u1") if y.size else b""])
    if not quiet:
        _echo_report(f"{src} -> {dst}: {head['dtype']} {_fmt_shape(head['shape'])} (numpy shape; "
                     f"raw little-endian, C order), {_fmt_bytes(len(data))} -> {_fmt_bytes(y.nbytes)}",
                     to_stderr=dst == "-")


@cli.command()
@click.argument("orig")
@click.argument("compressed")
@click.option("--eb", type=float, default=None, help="check against this bound instead of the recorded one")
@click.option("--mode", type=MODE_CHOICE, default="rel", show_default=True, help="mode of --eb")
@click.option("--progress/--no-progress", default=None, help="progress bar (default: when stderr is a terminal)")
@_errors
def verify(orig, compressed, eb, mode, progress):
    """Check a compressed file against its original: max error / bound and PSNR per dataset.

    HDF5: every dataset of ORIG against the same path in COMPRESSED (ebzip
    datasets against the bound each chunk records; every other dataset must be
    identical, a float one unless --eb is given). Raw: ORIG a raw binary
    array, COMPRESSED its ebzip stream.
    Exits 1 on any violation.
    """
    mode = mode.lower()
    if eb is not None:  # checked up front, for raw arrays as for HDF5 (a negative bound passed nothing)
        try:
            api.check_bound(eb, mode)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--eb") from None
    for p in (orig, compressed):
        if not os.path.exists(p):
            raise click.ClickException(f"no such file: {p}")
    if _is_hdf5(orig) and _is_hdf5(compressed):
        h5file = _need_hdf5()
        reports = h5file.verify_files(orig, compressed, eb=eb, mode=mode, progress=_progress_default(progress))
        rows = []
        for r in reports:
            if r.kind == "float":
                rows.append([r.path, _fmt_shape(r.shape), r.dtype, f"{r.max_err:.4g}",
                             "-" if r.bound is None else f"{r.bound:.4g}",
                             "-" if r.err_over_bound is None else f"{r.err_over_bound:.4f}",
                             "inf" if math.isinf(r.psnr) else f"{r.psnr:.2f}", "ok" if r.ok else "FAIL", r.note])
            else:
                rows.append([r.path, _fmt_shape(r.shape or ()), r.dtype, "-", "-", "-", "-", "ok" if r.ok else "FAIL",
                             r.note])
        click.echo(_table(rows, ["dataset", "shape", "dtype", "max err", "bound", "err/bound", "PSNR dB", "status",
                                 "note"], right={3, 4, 5, 6}))
        bad = [r for r in reports if not r.ok]
        nfloat = sum(r.kind == "float" for r in reports)
        if bad:
            click.echo(f"FAIL: {len(bad)} of {len(reports)} dataset(s) violate the bound or differ", err=True)
            sys.exit(1)
        click.echo(f"ok: {nfloat} float dataset(s) within their bounds, {len(reports) - nfloat} other dataset(s) "
                   "identical")
        return
    data = _read_stream(compressed)
    if data is None:
        raise click.ClickException(f"{compressed}: give two HDF5 files, or a raw array and its ebzip stream")
    import numpy as np

    head = api.inspect(data)
    y = api.decompress(data, raw_bf16=True)
    store = y.dtype
    piped = _piped(orig)
    size = os.path.getsize(orig) if piped is None else len(piped)
    if size != y.nbytes:
        raise click.ClickException(f"{orig}: {size} bytes, the stream holds {head['dtype']} "
                                   f"{_fmt_shape(head['shape'])} ({y.nbytes} bytes)")
    x = (np.fromfile(orig, dtype=store) if piped is None else np.frombuffer(piped, dtype=store)).reshape(y.shape)
    x64, y64 = _arrays.as_float64(x, head["dtype"]), _arrays.as_float64(y, head["dtype"])
    fin = np.isfinite(x64)
    with np.errstate(over="ignore", invalid="ignore"):  # errors near float64's largest overflow to inf
        err = np.abs(x64[fin] - y64[fin])
        max_err = float(err.max()) if err.size else 0.0
        mse = float(np.mean(err * err)) if err.size else 0.0
    if math.isnan(max_err):  # a NaN where a finite value was
        max_err = mse = math.inf
    ub = np.dtype(f"u{store.itemsize}")
    bad_nf = int(np.count_nonzero(x.view(ub)[~fin] != y.view(ub)[~fin]))
    vr = api._value_range(x64[fin].min(), x64[fin].max()) if err.size else 0.0  # capped, as compress does
    psnr = math.inf if mse == 0 else (20 * math.log10(vr) - 10 * math.log10(mse) if vr > 0 else -math.inf)
    if eb is None:
        bound = head["eb_abs"]
    else:
        bound = eb if mode == "abs" else min(eb * vr, api._DBL_MAX) if mode == "rel" else None
    ratio = None if bound is None else ((0.0 if max_err == 0 else math.inf) if bound == 0 else max_err / bound)
    ok = bad_nf == 0 and (ratio is None or ratio <= 1) and (bound is not None or psnr >= eb)
    click.echo(f"{orig} vs {compressed}: {head['dtype']} {_fmt_shape(head['shape'])}  max err {max_err:.4g}  "
               f"bound {'-' if bound is None else f'{bound:.4g}'}  err/bound {'-' if ratio is None else f'{ratio:.4f}'}  "
               f"PSNR {psnr:.2f} dB  non-finite mismatches {bad_nf}  {'ok' if ok else 'FAIL'}")
    if not ok:
        sys.exit(1)


@cli.command()
@click.argument("src", metavar="IN")
@_bound_options
@_raw_options
@click.option("--include", multiple=True, metavar="PATTERN", help="HDF5: only matching datasets")
@click.option("--exclude", multiple=True, metavar="PATTERN", help="HDF5: leave matching datasets out")
@click.option("--eb-for", multiple=True, metavar="PATTERN=VALUE[:MODE]", help="HDF5: a bound for matching datasets")
@click.option("--sample", type=float, default=0.05, show_default=True, help="fraction of the chunks to compress")
@click.option("--threads", type=int, default=None, help="CPU threads (default: all)")
@_errors
def estimate(src, eb, mode, M, A, R, a_zfp, f32, f64, dtype, d1, d2, d3, d4, include, exclude, eb_for, sample,
             threads):
    """Predict the compression ratio from a sample, writing nothing."""
    eb, mode = _resolve_bound(eb, mode, M, A, R, a_zfp)
    if threads is not None:
        api.set_num_threads(threads)
    if not 0 < sample <= 1:
        raise click.BadParameter("a fraction in (0, 1]", param_hint="--sample")
    if src != "-" and not os.path.exists(src):
        raise click.ClickException(f"no such file: {src}")
    shape = _raw_dims(d1, d2, d3, d4)
    if not _is_raw(src, shape, f32, f64, dtype, include, exclude, eb_for):
        if not _is_hdf5(src):
            raise click.ClickException(f"{src} is not an HDF5 file (for a raw binary array give -f|-d and -1..-4)")
        h5file = _need_hdf5()
        try:
            reports = h5file.estimate_file(src, eb, mode, include=include, exclude=exclude, eb_for=eb_for,
                                           sample=sample, threads=threads)
        except h5file.PatternError as e:
            raise click.BadParameter(str(e), param_hint="pattern") from None
        rows = [[r.path, _fmt_shape(r.shape), r.dtype, r.bound, f"{100 * r.sampled_fraction:.1f}%",
                 _fmt_ratio(r.predicted_ratio), _fmt_bytes(r.original_nbytes / r.predicted_ratio)] for r in reports]
        click.echo(_table(rows, ["dataset", "shape", "dtype", "bound", "sampled", "ratio", "predicted size"],
                          right={4, 5, 6}))
        orig = sum(r.original_nbytes for r in reports)
        pred = sum(r.original_nbytes / r.predicted_ratio for r in reports)
        click.echo(f"predicted: {_fmt_bytes(orig)} -> {_fmt_bytes(pred)} "
                   f"(ratio {_fmt_ratio(orig / pred if pred else math.inf)}); nothing written")
        return
    name = _raw_dtype(f32, f64, dtype)
    x = _load_raw(src, name, shape)
    # whole ebzip blocks (2**18 elements, contiguous along the first axis), evenly spread (the middle of
    # equal runs: a volume's first and last blocks are often empty borders), each
    # compressed on its own: a Lorenzo stream codes its blocks so; an interpolation stream's tiles
    # may span several blocks and then compress better than this predicts (docs/cli.md, estimate)
    n0, inner = shape[0], max(1, math.prod(shape[1:]))
    rows_per = max(1, (1 << 18) // inner)
    nblk = -(-n0 // rows_per)
    k = max(1, min(nblk, math.ceil(sample * nblk)))
    starts = [i * rows_per for i in _arrays.spread_indices(nblk, k)]
    import numpy as np

    raw = stored = 0
    pieces = [x[s:s + rows_per] for s in starts]
    if mode == "rel":
        lo, hi = math.inf, -math.inf
        for p in pieces:
            v = _arrays.as_float64(p, name)
            v = v[np.isfinite(v)]
            if v.size:
                lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
        eb_abs, m = min(eb * api._value_range(lo, hi), api._DBL_MAX), "abs"  # capped, as compress does
    else:
        eb_abs, m = eb, mode
    for p in pieces:
        c = api.compress(np.ascontiguousarray(p), eb_abs, m, dtype="bfloat16" if name == "bfloat16" else None)
        raw += c.original_nbytes
        stored += c.nbytes
    ratio = raw / stored if stored else math.inf
    total = math.prod(shape) * (2 if name == "bfloat16" else np.dtype(name).itemsize)
    click.echo(f"{src}: {name} {_fmt_shape(shape)}, {mode} {eb:g}, sampled {100 * raw / total:.1f}%: "
               f"predicted ratio {_fmt_ratio(ratio)} ({_fmt_bytes(total)} -> {_fmt_bytes(total / ratio)}); "
               "nothing written")


_SZ3_MODE_FLAG = {"abs": "-A", "rel": "-R", "psnr": "--eb"}


def _sz3_mode_value(argv: list[str]) -> list[str]:
    """SZ3's ``-M MODE VALUE`` (the bound after the mode, as in ``-M ABS 1e-3``) as ``-M MODE -A VALUE``
    (``-R`` for REL, ``--eb`` for PSNR): a number after the mode is the bound, never a path."""
    out, i = [], 0
    while i < len(argv):
        out.append(argv[i])
        if argv[i] == "-M" and i + 2 < len(argv) and argv[i + 1].lower() in _SZ3_MODE_FLAG:
            value = argv[i + 2]
            try:
                float(value)
            except ValueError:
                pass
            else:
                if not value.startswith("-"):  # (-1 NX is a dimension flag; bounds are >= 0)
                    out += [argv[i + 1], _SZ3_MODE_FLAG[argv[i + 1].lower()], value]
                    i += 3
                    continue
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ebzip`` console script; returns the exit status."""
    argv = _sz3_mode_value(list(sys.argv[1:] if argv is None else argv))
    try:
        cli.main(args=argv, prog_name="ebzip", standalone_mode=True)
    except SystemExit as e:
        code = e.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
