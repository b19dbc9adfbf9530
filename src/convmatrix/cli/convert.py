"""``convmatrix convert IN.onnx -o OUT.onnx``: a CNN as the exactly equivalent FC ReLU network."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

from . import CLIError
from .options import add_command, shape

EPILOG = """\
examples:
  convmatrix convert cnn.onnx -o fc.onnx                 Gemm+Relu chain, checked on 10 random inputs
  convmatrix convert cnn.onnx -o fc.nnet                 NNet text file (format from the extension)
  convmatrix convert cnn.onnx -o fc.pt --check 100       torch state dict + layer sizes
  convmatrix convert cnn.onnx -o fc.npz                  sparse layers (scipy CSR arrays)
  convmatrix convert big.onnx -o fc.onnx --max-bytes 4GB
  convmatrix convert classifier.onnx -o fc.onnx --drop-final softmax
  convmatrix convert fcn.onnx -o fc.onnx --input-shape 3x32x32    dynamic height and width

The output computes exactly what the input computes (to float32 rounding); its input
and output keep the original names, shapes and order, so VNN-LIB properties written
for the original apply unchanged.
"""

def byte_size(text: str) -> int:
    """``"512MB"`` -> 512000000 (:func:`convmatrix.core.geometry.parse_bytes`), as an argparse type."""
    from ..core.geometry import parse_bytes

    try:
        return parse_bytes(text, "--max-bytes")
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers) -> None:
    p = add_command(subparsers, "convert", help="convert a CNN (ONNX) into an exactly equivalent fully connected ReLU network",
        description="Read a convolutional network from ONNX and write one sequential chain of "
        "Flatten/Reshape, Gemm and Relu nodes (or pt / NNet / npz) that computes exactly the same "
        "function. Prints a table of the layers and the largest difference between original "
        "(onnxruntime) and result on random inputs.",
        epilog=EPILOG)
    p.add_argument("input", metavar="IN.onnx", help="the ONNX model to convert")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="file to write")
    p.add_argument("--format", choices=("onnx", "pt", "nnet", "npz"), default=None,
                   help="output format (default: from OUT's extension, else onnx)")
    p.add_argument("--check", type=int, default=10, metavar="N",
                   help="compare original and result on N random inputs (default 10)")
    p.add_argument("--max-bytes", type=byte_size, default=None, metavar="SIZE",
                   help="refuse outputs larger than SIZE (default 2GB dense; npz: 2GB sparse)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random check inputs")
    batch = p.add_mutually_exclusive_group()
    batch.add_argument("--batch-axis", dest="batch_axis", action="store_true", default=None,
                       help="the input's leading axis is a batch axis (default: when it is dynamic or of size 1)")
    batch.add_argument("--no-batch-axis", dest="batch_axis", action="store_false",
                       help="the input's leading axis is part of the sample")
    p.add_argument("--input-shape", type=shape, default=None, metavar="SHAPE",
                   help="the sample's shape without the batch axis (e.g. 3x224x224), for inputs with dynamic sizes")
    p.add_argument("--drop-final", default="", metavar="OP[,OP]",
                   help="drop a final strictly increasing operation, keeping the argmax: softmax, logsoftmax, "
                        "sigmoid, tanh, ...")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=run)


def _format(args) -> str:
    if args.format:
        return args.format
    ext = os.path.splitext(args.output)[1].lower().lstrip(".")
    return {"pth": "pt", "pt": "pt", "nnet": "nnet", "npz": "npz"}.get(ext, "onnx")


def _progress(total: int, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:  # progress bars are optional
        return None
    return tqdm(total=total, desc=desc, unit="step", leave=False, disable=not sys.stderr.isatty())


def _random_inputs(meta, n: int, seed: int):
    """``n`` standard normal inputs, as the original's input takes them (batch axis as it has it)."""
    rng = np.random.default_rng(seed)
    dims = meta["input_dims"]
    dtype = np.float64 if meta.get("float64") else np.float32
    if meta["batched"]:
        rest = [int(d) for d in dims[1:]]
        batch = n if meta["dynamic_batch"] else int(dims[0])
        runs = 1 if meta["dynamic_batch"] else max(1, -(-n // batch))
        return [rng.standard_normal((batch, *rest)).astype(dtype) for _ in range(runs)]
    return [rng.standard_normal([int(d) for d in dims]).astype(dtype) for _ in range(max(1, n))]


def _rows(x, batched: bool):
    """A check input (or output) as rows of flat samples: one per batch entry, or one."""
    return x.reshape(len(x), -1) if batched and x.ndim > 1 else x.reshape(1, -1)


def _run_onnx(path, xs, name, batched=True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.disable_prepacking", "1")  # no second copy of big weights
    sess = ort.InferenceSession(os.fspath(path), opts, providers=["CPUExecutionProvider"])
    outs = []
    for x in xs:
        y = np.asarray(sess.run(None, {name: x})[0], dtype=np.float64)
        outs.append(_rows(y, batched) if y.ndim else y.reshape(1, -1))
    return np.concatenate(outs)


def _table(chain, fmt) -> str:
    from ..core.geometry import format_bytes

    rows = chain.table()
    head = f"{'layer':>5}  {'activation':<14} {'inputs':>10} {'neurons':>10} {'stored entries':>15} {'dense bytes':>12}"
    lines = [head, "-" * len(head)]
    for i, (act, n_in, n_out, nnz, dense) in enumerate(rows, 1):
        lines.append(f"{i:>5}  {act:<14} {n_in:>10,} {n_out:>10,} {nnz:>15,} {format_bytes(dense):>12}")
    total_nnz = sum(r[3] for r in rows)
    total_dense = sum(r[4] for r in rows)
    lines.append("-" * len(head))
    lines.append(f"{'total':>5}  {'':<14} {rows[0][1]:>10,} {sum(r[2] for r in rows):>10,} {total_nnz:>15,} "
                 f"{format_bytes(total_dense):>12}")
    return "\n".join(lines)


class _CheckFailed(Exception):
    """The written network disagrees with the original (a bug): exit status 1."""


def run(args) -> int:
    try:
        return _run(args)
    except _CheckFailed as exc:
        print(f"convmatrix convert: {exc}", file=sys.stderr)
        return 1


def _run(args) -> int:
    from ..core.geometry import format_bytes
    from ..network import export
    from ..network.check import compare
    from ..network.onnx_frontend import from_onnx, without_dropped
    from ..network.passes import expand_max, lower, relu_only

    fmt = _format(args)
    if args.check < 0:
        raise CLIError(f"--check must be >= 0, got {args.check}")
    out_dir = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(out_dir):
        raise CLIError(f"{args.output}: the folder {out_dir} does not exist")
    graph = from_onnx(args.input, batch_axis=args.batch_axis, input_shape=args.input_shape,
                      drop_final=args.drop_final)
    graph = expand_max(graph)
    if fmt in ("onnx", "nnet"):
        graph = relu_only(graph)
    bar = _progress(len(graph.nodes), "lowering")
    try:
        chain = lower(graph, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    if fmt in ("onnx", "nnet"):
        export.check_relu_chain(chain, fmt.upper() if fmt == "onnx" else "NNet")
    size = export.sparse_bytes(chain) if fmt == "npz" else export.dense_bytes(chain)
    if fmt == "nnet":
        size *= 6  # text: about 24 characters per float32 entry
    limit = args.max_bytes if args.max_bytes is not None else 2 * 10**9
    if size > limit:
        raise CLIError(f"the {fmt} output would take about {format_bytes(size)} "
                       f"({len(chain.layers)} layers, {sum(r[2] for r in chain.table()):,} neurons), more than "
                       f"--max-bytes {format_bytes(limit)}; pass --max-bytes {format_bytes(size * 1.1).replace(' ', '')} "
                       f"to write it anyway" + ("" if fmt == "npz" else ", or --format npz for sparse layers"))
    # Write next to the target, check, then move into place: a failed check leaves no file.
    fd, tmp = tempfile.mkstemp(suffix="." + fmt, dir=out_dir)
    os.close(fd)
    try:
        bar = _progress(len(chain.layers) + 1, "writing")
        if fmt == "onnx":
            export.write_onnx(chain, tmp, progress=bar, data_name=os.path.basename(args.output) + ".data",
                              dtype=np.float64 if graph.meta.get("float64") else np.float32)
        elif fmt == "pt":
            export.write_pt(chain, tmp)
        elif fmt == "nnet":
            export.write_nnet(chain, tmp, progress=bar)
        else:
            export.write_npz(chain, tmp)
        if bar is not None:
            bar.close()
        max_abs = max_rel = 0.0
        if args.check:
            xs = _random_inputs(graph.meta, args.check, args.seed)
            batched = graph.meta["batched"]
            ref = _run_onnx(without_dropped(args.input, graph.meta), xs, graph.meta["input_name"], batched)
            got = _evaluate_written(fmt, tmp, xs, graph.meta["input_name"], batched)
            max_abs, max_rel = compare(ref, got)
            scale = max(1.0, float(np.abs(ref[np.isfinite(ref)]).max(initial=0.0)))
            if not np.isfinite(max_abs) or max_abs > 1e-3 * scale:
                raise _CheckFailed(f"check failed: max abs difference {max_abs:.3g} "
                                   f"(largest output {scale:.3g}); nothing written")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it private; give it the usual permissions
        os.replace(tmp, args.output)
    except BaseException:
        data = os.path.join(out_dir, os.path.basename(args.output) + ".data")
        if fmt == "onnx" and os.path.exists(data):
            os.remove(data)  # weights of a big model that failed its check
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    if not args.quiet:
        print(f"{args.input} -> {args.output} ({fmt})")
        print(_table(chain, fmt))
        print(f"input {graph.meta['input_name']!r} {graph.meta['input_dims']}, output "
              f"{graph.meta['output_name']!r} {graph.meta['output_dims']}")
        if graph.meta.get("dropped_final"):
            print(f"dropped the final {graph.meta['dropped_final']} (--drop-final): the written network "
                  "computes its input, so the argmax is the original's and the check compares before it")
        if args.check:
            n = sum(len(x) if graph.meta["batched"] else 1 for x in _random_inputs(graph.meta, args.check, args.seed))
            print(f"check on {n} random inputs (onnxruntime on {os.path.basename(args.input)} vs the written "
                  f"{fmt}): max abs difference {max_abs:.3g}, max rel difference {max_rel:.3g} "
                  "(of the largest output)")
    return 0


def _evaluate_written(fmt, path, xs, input_name, batched=True):
    """The written file's outputs for the check inputs, read back from the file itself."""
    from ..network import export

    if fmt == "onnx":
        return _run_onnx(path, xs, input_name, batched)
    flat = [_rows(x, batched) for x in xs]
    if fmt == "pt":
        import torch

        mlp = export.read_pt(path)
        with torch.no_grad():
            return np.concatenate([mlp(torch.from_numpy(f)).reshape(len(f), -1).double().numpy() for f in flat])
    if fmt == "npz":
        chain = export.read_npz(path)
        return np.concatenate([chain.evaluate(f.astype(np.float64)) for f in flat])
    layers = export.read_nnet(path)
    outs = []
    for z in flat:
        z = z.astype(np.float64)
        for k, (W, b) in enumerate(layers):
            z = z @ W.T + b
            if k < len(layers) - 1:
                z = np.maximum(z, 0)
        outs.append(z)
    return np.concatenate(outs)
