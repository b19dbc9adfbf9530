"""The conversion pipeline: an ONNX CNN -> the exactly equivalent fully connected network, written and checked.

:func:`convert` reads the model (:func:`~convmatrix.network.onnx_frontend.from_onnx`),
rewrites max pooling and the ReLU family as ReLU trees, lowers the graph to one chain
(:mod:`.passes`), makes the chain smaller where an exactly equivalent one has fewer
dense bytes (:mod:`.simplify`), writes the chain next to the target, runs the original (onnxruntime)
and the written file on random inputs and only then moves the file into place: a
failed check leaves nothing behind. It returns a :class:`ConvertReport`; the
``convmatrix convert`` command prints it.

Example
-------
>>> import os, tempfile, warnings, torch
>>> from convmatrix.network.convert import convert
>>> d = tempfile.mkdtemp()
>>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(),
...                           torch.nn.Linear(8, 3)).eval()
>>> with warnings.catch_warnings():
...     warnings.simplefilter("ignore")
...     torch.onnx.export(net, (torch.randn(1, 1, 4, 4),), os.path.join(d, "cnn.onnx"), dynamo=False)
>>> report = convert(os.path.join(d, "cnn.onnx"), os.path.join(d, "fc.onnx"), check=5)
>>> [row[2] for row in report.chain.table()], report.max_rel < 1e-5
([8, 3], True)
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .._progress import progress_bar
from ..core.geometry import format_bytes
from . import export
from .check import ConversionError, compare
from .passes import Chain

__all__ = ["ConvertReport", "convert", "output_format", "random_inputs", "rows", "run_onnx"]

DEFAULT_MAX_BYTES = 2 * 10**9


@dataclass
class ConvertReport:
    """What :func:`convert` did: the chain it wrote, its size, and how far it is from the original.

    ``dense_bytes_before`` is the chain's size before :func:`~convmatrix.network.simplify.simplify`
    made it smaller (equal to :attr:`dense_bytes` when it found nothing). ``max_abs`` / ``max_rel`` are the largest absolute difference between the original's
    and the written file's outputs on ``checked`` random inputs, and the same relative
    to the largest output (0 when ``checked`` is 0).
    """

    source: str
    output: str
    format: str
    chain: Chain
    dense_bytes_before: int = 0
    checked: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0

    @property
    def dense_bytes(self) -> int:
        """Bytes of the written chain's weights and biases stored densely (float32)."""
        return export.dense_bytes(self.chain)

    def table(self) -> str:
        """The layer table: activation, inputs, neurons, stored entries and dense bytes per layer."""
        rows = self.chain.table()
        head = f"{'layer':>5}  {'activation':<14} {'inputs':>10} {'neurons':>10} {'stored entries':>15} {'dense bytes':>12}"
        lines = [head, "-" * len(head)]
        for i, (act, n_in, n_out, nnz, dense) in enumerate(rows, 1):
            lines.append(f"{i:>5}  {act:<14} {n_in:>10,} {n_out:>10,} {nnz:>15,} {format_bytes(dense):>12}")
        lines.append("-" * len(head))
        lines.append(f"{'total':>5}  {'':<14} {rows[0][1]:>10,} {sum(r[2] for r in rows):>10,} "
                     f"{sum(r[3] for r in rows):>15,} {format_bytes(sum(r[4] for r in rows)):>12}")
        return "\n".join(lines)

    def __str__(self) -> str:
        meta = self.chain.meta
        lines = [f"{self.source} -> {self.output} ({self.format})", self.table()]
        if self.dense_bytes_before > self.dense_bytes:
            lines.append(f"simplified from {format_bytes(self.dense_bytes_before)} dense "
                         f"({self.dense_bytes / self.dense_bytes_before:.0%} of it)")
        lines += [f"input {meta['input_name']!r} {meta['input_dims']}, output "
                 f"{meta['output_name']!r} {meta['output_dims']}"]
        if meta.get("dropped_final"):
            lines.append(f"dropped the final {meta['dropped_final']} (--drop-final): the written network "
                         "computes its input, so the argmax is the original's and the check compares before it")
        if self.checked:
            lines.append(f"check on {self.checked} random inputs (onnxruntime on {os.path.basename(self.source)} "
                         f"vs the written {self.format}): max abs difference {self.max_abs:.3g}, max rel "
                         f"difference {self.max_rel:.3g} (of the largest output)")
        return "\n".join(lines)


def output_format(path, format: str | None = None) -> str:
    """``format`` if given (one of :data:`~convmatrix.network.export.FORMATS`), else from ``path``'s
    extension (``.pt``/``.pth``, ``.nnet``, ``.npz``; anything else: ``onnx``).

    >>> output_format("fc.nnet"), output_format("fc.bin"), output_format("fc.bin", "npz")
    ('nnet', 'onnx', 'npz')
    """
    if format is not None:
        if format not in export.FORMATS:
            raise ValueError(f"format must be one of {export.FORMATS}, got {format!r}")
        return format
    ext = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    return {"pth": "pt", "pt": "pt", "nnet": "nnet", "npz": "npz"}.get(ext, "onnx")


def convert(source, output, *, format: str | None = None, check: int = 10, seed: int = 0,
            max_bytes: int | None = None, simplify: bool = True, progress: bool | None = None,
            **read_options) -> ConvertReport:
    """Convert the ONNX model ``source`` into a fully connected network written to ``output``.

    Parameters
    ----------
    source, output : str or os.PathLike
        The ONNX model to read and the file to write (its folder must exist).
    format : {"onnx", "pt", "nnet", "npz"}, optional
        Default: from ``output``'s extension (:func:`output_format`). ``onnx`` and ``nnet``
        hold plain Gemm/Relu chains; ``pt`` and ``npz`` hold any chain.
    check : int
        Number of random inputs on which the original (onnxruntime) and the written file
        are compared before the file is moved into place; 0 skips the check.
    seed : int
        Seed of the check inputs.
    max_bytes : int, optional
        Refuse (ValueError, before writing) an output larger than this: dense float32
        bytes for onnx/pt, about 6x that for NNet text, CSR bytes for npz. Default 2 GB.
    simplify : bool
        Write the smallest exactly equivalent chain found (default: pool splits and
        :func:`~convmatrix.network.simplify.simplify`, see :func:`lower_for`) instead of the
        chain as lowered.
    progress : bool, optional
        Progress bars on stderr (default: only on a terminal).
    **read_options
        Passed to :func:`~convmatrix.network.onnx_frontend.from_onnx`.

    Raises ValueError for bad arguments and unreadable or unsupported models, and
    :class:`~convmatrix.network.check.ConversionError` when the check fails (nothing is
    written then).
    """
    fmt = output_format(output, format)
    if isinstance(check, bool) or not isinstance(check, (int, np.integer)):
        raise TypeError(f"check must be an int (the number of random inputs), got {type(check).__name__}")
    if check < 0:
        raise ValueError(f"check must be >= 0, got {check}")
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer))):
        raise TypeError(f"max_bytes must be an int (bytes) or None, got {type(max_bytes).__name__}")
    out_dir = os.path.dirname(os.path.abspath(os.fspath(output)))
    if not os.path.isdir(out_dir):
        raise ValueError(f"{output}: the folder {out_dir} does not exist")
    chain, before = lower_for(source, fmt, simplify=simplify, progress=progress, **read_options)
    check_size(chain, fmt, DEFAULT_MAX_BYTES if max_bytes is None else max_bytes)
    report = ConvertReport(os.fspath(source), os.fspath(output), fmt, chain, before)
    write_checked(report, out_dir, check, seed, progress)
    return report


def lower_for(source, fmt: str, *, simplify: bool = True, progress: bool | None = None,
              **read_options) -> tuple[Chain, int]:
    """``(chain, dense bytes as lowered)``: the model as the chain a ``fmt`` file holds (ReLU only
    for onnx and nnet). With ``simplify``, the smallest ``fmt`` file (:func:`output_bytes`)
    among the chain as lowered, every pool split of it
    (:func:`~convmatrix.network.simplify.split_pools`) and each of those simplified."""
    from . import simplify as smaller
    from .onnx_frontend import from_onnx

    graph = from_onnx(source, **read_options)
    best = lowered = lower_graph(graph, fmt, progress)
    if simplify:
        for inner in [None] + smaller.pool_splits(graph):
            chain = lowered if inner is None else lower_graph(smaller.split_pools(graph, inner), fmt, progress)
            for candidate in (chain, smaller.simplify(chain)):
                if output_bytes(candidate, fmt) < output_bytes(best, fmt):
                    best = candidate
    if fmt in ("onnx", "nnet"):
        export.check_relu_chain(best, "ONNX" if fmt == "onnx" else "NNet")
    return best, export.dense_bytes(lowered)


def lower_graph(graph, fmt: str, progress: bool | None = None) -> Chain:
    """Max pools as ReLU trees, the ReLU family as ReLUs (onnx, nnet), lowered to one chain."""
    from .passes import expand_max, lower, relu_only

    graph = expand_max(graph)
    if fmt in ("onnx", "nnet"):
        graph = relu_only(graph)
    with progress_bar(len(graph.nodes), "lowering", show=progress) as bar:
        return lower(graph, progress=bar)


def output_bytes(chain: Chain, fmt: str) -> int:
    """About how many bytes a ``fmt`` file of ``chain`` takes."""
    if fmt == "npz":
        return export.sparse_bytes(chain)
    return export.dense_bytes(chain) * (6 if fmt == "nnet" else 1)  # NNet: ~24 characters per entry


def check_size(chain: Chain, fmt: str, max_bytes: int) -> None:
    """Refuse an output larger than ``max_bytes``, with the estimate and what to pass instead."""
    size = output_bytes(chain, fmt)
    if size > max_bytes:
        neurons = sum(r[2] for r in chain.table())
        raise ValueError(f"the {fmt} output would take about {format_bytes(size)} ({len(chain.layers)} layers, "
                         f"{neurons:,} neurons), more than --max-bytes {format_bytes(max_bytes)}; pass --max-bytes "
                         f"{format_bytes(size * 1.1).replace(' ', '')} to write it anyway"
                         + ("" if fmt == "npz" else ", or --format npz for sparse layers"))


def write_checked(report: ConvertReport, out_dir: str, check: int, seed: int, progress: bool | None) -> None:
    """Write ``report.chain`` next to the target, check it, then move it into place (nothing on failure)."""
    fmt, chain = report.format, report.chain
    fd, tmp = tempfile.mkstemp(suffix="." + fmt, dir=out_dir)
    os.close(fd)
    data = os.path.join(out_dir, os.path.basename(report.output) + ".data")
    try:
        with progress_bar(len(chain.layers) + 1, "writing", show=progress) as bar:
            places = write(chain, fmt, tmp, data_name=os.path.basename(data), progress=bar)
        if check:
            with written_view(chain, fmt, tmp, places) as readable:
                report.checked, report.max_abs, report.max_rel = check_written(report.source, fmt, readable,
                                                                               chain.meta, check, seed)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it private; give it the usual permissions
        os.replace(tmp, report.output)
    except BaseException:
        if fmt == "onnx" and os.path.exists(data):
            os.remove(data)  # weights of a big model that failed its check
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def onnx_dtype(chain: Chain) -> type:
    """float64 for a model of doubles, else float32."""
    return np.float64 if chain.meta.get("float64") else np.float32


def write(chain: Chain, fmt: str, path, *, data_name: str | None = None, progress=None):
    """``chain`` as a ``fmt`` file at ``path`` (ONNX: weights over protobuf's limit in ``data_name``).

    Returns, for ONNX, where the weights lie (:func:`~convmatrix.network.export.write_onnx`).
    """
    if fmt == "onnx":
        return export.write_onnx(chain, path, progress=progress, data_name=data_name, dtype=onnx_dtype(chain))
    if fmt == "pt":
        export.write_pt(chain, path)
    elif fmt == "nnet":
        export.write_nnet(chain, path, progress=progress)
    else:
        export.write_npz(chain, path)
    return None


@contextmanager
def written_view(chain: Chain, fmt: str, path: str, places):
    """The path to evaluate a written file by: for ONNX a model beside it that refers to the
    written weights where they lie (:func:`~convmatrix.network.export.onnx_view`), so
    onnxruntime maps the file's bytes instead of parsing a copy of them, with a dynamic
    batch axis where the model has one, so that the check inputs run in one batch (one
    pass over the weights); else ``path``."""
    if fmt != "onnx":
        yield path
        return
    meta = chain.meta
    if meta.get("batched"):
        meta = dict(meta, input_dims=["N", *meta["input_dims"][1:]], output_dims=["N", *meta["output_dims"][1:]])
    fd, view = tempfile.mkstemp(suffix=".view.onnx", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as f:
            model = export.onnx_view(Chain(chain.layers, chain.input_shape, chain.output_shape, meta), places,
                                     dtype=onnx_dtype(chain))
            f.write(model.SerializeToString())
        yield view
    finally:
        os.remove(view)


def check_written(source, fmt: str, path, meta: dict, n: int, seed: int) -> tuple[int, float, float]:
    """``(inputs, max_abs, max_rel)`` of the original against the written file on ``n`` random inputs.

    Raises :class:`~convmatrix.network.check.ConversionError` beyond 1e-3 of the largest output.
    """
    from .onnx_frontend import without_dropped

    xs = random_inputs(meta, n, seed)
    # A batch runs through both at once only where the output keeps the batch axis in front
    # (not a scalar, not after a Flatten or Transpose that moved it): else one sample at a time.
    batched = meta["batched"] and meta.get("output_batched", True)
    ref = run_onnx(without_dropped(source, meta), xs, meta["input_name"], batched)
    got = evaluate_written(fmt, path, [np.concatenate(xs)] if fmt == "onnx" and batched else xs,
                           meta["input_name"], batched)
    max_abs, max_rel = compare(ref, got)
    scale = max(1.0, float(np.abs(ref[np.isfinite(ref)]).max(initial=0.0)))
    if not np.isfinite(max_abs) or max_abs > 1e-3 * scale:
        raise ConversionError(f"check failed: max abs difference {max_abs:.3g} "
                              f"(largest output {scale:.3g}); nothing written")
    return len(ref), max_abs, max_rel


def random_inputs(meta: dict, n: int, seed: int) -> list[np.ndarray]:
    """Batches of standard normal inputs, ``n`` samples in all (a fixed batch may round up), shaped as the
    original's input takes them (batch axis as it has it)."""
    rng = np.random.default_rng(seed)
    dims = meta["input_dims"]
    dtype = np.float64 if meta.get("float64") else np.float32
    if meta["batched"]:
        rest = [int(d) for d in dims[1:]]
        batch = n if meta["dynamic_batch"] else int(dims[0])
        runs = 1 if meta["dynamic_batch"] else max(1, -(-n // batch))
        return [rng.standard_normal((batch, *rest)).astype(dtype) for _ in range(runs)]
    return [rng.standard_normal([int(d) for d in dims]).astype(dtype) for _ in range(max(1, n))]


def rows(x: np.ndarray, batched: bool) -> np.ndarray:
    """A check input (or output) as rows of flat samples: one per batch entry, or one."""
    return x.reshape(len(x), -1) if batched and x.ndim > 1 else x.reshape(1, -1)


def run_onnx(path, xs: list[np.ndarray], input_name: str, batched: bool = True) -> np.ndarray:
    """onnxruntime's outputs for the batches ``xs``, one row per sample (float64)."""
    from .._optional import require

    ort = require("onnxruntime", extra="onnx", feature="convert")
    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # its errors come back as one exception below, not as log lines
    opts.add_session_config_entry("session.disable_prepacking", "1")  # no second copy of big weights
    sess = ort.InferenceSession(os.fspath(path), opts, providers=["CPUExecutionProvider"])
    outs = []
    for x in xs:
        try:
            y = np.asarray(sess.run(None, {input_name: x})[0], dtype=np.float64)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception classes
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ValueError(f"onnxruntime cannot run {os.path.basename(os.fspath(path))} on an input of "
                             f"shape {x.shape}: {first}") from None
        outs.append(rows(y, batched) if y.ndim else y.reshape(1, -1))
    return np.concatenate(outs)


def evaluate_written(fmt: str, path, xs: list[np.ndarray], input_name: str, batched: bool = True) -> np.ndarray:
    """The written file's outputs for the check inputs, read back from the file itself."""
    if fmt == "onnx":
        return run_onnx(path, xs, input_name, batched)
    flat = [rows(x, batched) for x in xs]
    if fmt == "pt":
        import torch

        mlp = export.read_pt(path)
        with torch.no_grad():
            return np.concatenate([mlp(torch.from_numpy(f)).reshape(len(f), -1).double().numpy() for f in flat])
    if fmt == "npz":
        chain = export.read_npz(path)
        return np.concatenate([chain.evaluate(f.astype(np.float64)) for f in flat])
    z, relu = np.concatenate(flat).astype(np.float64), False
    for W, b in export.iter_nnet(path):
        z = (np.maximum(z, 0) if relu else z) @ W.T + b  # ReLU between layers, none after the last
        relu = True
        del W  # one layer in memory at a time
    return z
