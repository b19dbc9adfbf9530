"""Writers (and readers) of lowered networks: ONNX Gemm+Relu chains, torch ``pt``, NNet, ``npz``.

All take a :class:`~convmatrix.network.passes.Chain`. The ONNX and NNet formats hold
plain fully connected ReLU networks, so they need a chain whose activations are all
ReLU on every neuron (run :func:`~convmatrix.network.passes.relu_only` first);
``pt`` and ``npz`` hold any chain.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp

from ..core.geometry import format_bytes
from .passes import Chain, Layer

__all__ = ["dense_bytes", "sparse_bytes", "check_relu_chain", "describe_origin", "write_onnx", "onnx_view",
           "dense_blocks", "write_pt", "read_pt", "write_nnet", "read_nnet", "iter_nnet", "write_npz", "read_npz",
           "FORMATS"]

FORMATS = ("onnx", "pt", "nnet", "npz")


def dense_bytes(chain: Chain, itemsize: int = 4) -> int:
    """Bytes of all weights and biases stored densely."""
    return sum(layer.M.shape[0] * (layer.M.shape[1] + 1) for layer in chain.layers) * itemsize


def sparse_bytes(chain: Chain) -> int:
    """Bytes of the chain as CSR layers (float64 values, int64 indices)."""
    return sum(16 * layer.M.nnz + 8 * (layer.M.shape[0] + 1) + 8 * layer.M.shape[0] for layer in chain.layers)


def check_relu_chain(chain: Chain, fmt: str) -> None:
    """Refuse a chain a plain ReLU network cannot hold (other activations, masked layers)."""
    for i, layer in enumerate(chain.layers):
        if layer.kind not in (None, "ReLU") or layer.index is not None:
            what = layer.kind if layer.index is None else f"{layer.kind} on part of the neurons"
            final = chain.meta.get("final_monotone")
            hint = f", or drop the model's final {final} with --drop-final {final.lower()} (the argmax is kept)" \
                if final else ""
            raise ValueError(f"layer {i + 1} has a {what} activation, which a {fmt} file of Gemm/Relu "
                             f"layers cannot hold exactly; write --format pt or npz instead{hint}")


def _layers_with_output(chain: Chain) -> list[Layer]:
    """The layers, with an identity Linear appended where the chain ends in an activation."""
    layers = list(chain.layers)
    if layers and layers[-1].kind is not None:
        n = layers[-1].M.shape[0]
        layers.append(Layer(sp.identity(n, format="csr"), np.zeros(n)))
    return layers


# -- ONNX --------------------------------------------------------------------------------

def _onnx_dims(dims):
    return [d if isinstance(d, int) else (d if isinstance(d, str) and d != "?" else "N") for d in dims]


SINGLE_FILE_BYTES = 1_800_000_000  # protobuf refuses messages over 2 GB: above this, weights go beside the file
BLOCK_BYTES = 64 * 2**20  # dense rows produced and written this many bytes at a time


def write_onnx(chain: Chain, path, *, progress=None, opset: int | None = None, dtype=np.float32,
               data_name: str | None = None, external: bool | None = None) -> list[tuple[str, int, int]]:
    """A sequential ONNX chain ``[Flatten|Reshape] -> (Gemm [-> Relu])* -> [Reshape]``.

    The input and output keep the names and shapes recorded in ``chain.meta`` (from
    the ONNX front end), a dynamic batch axis stays dynamic. Each dense weight is
    produced and written once, a row block at a time, so memory stays at one block
    beyond the sparse chain. Models over :data:`SINGLE_FILE_BYTES` (or with
    ``external=True``) keep their weights in ``data_name`` (default
    ``<file name>.data``) beside the file, as protobuf cannot hold more than 2 GB.
    Returns where each weight's bytes lie: ``(file name, offset, length)`` per layer
    (see :func:`onnx_view`).

    >>> import os, tempfile, onnx, scipy.sparse as sp
    >>> chain = Chain([Layer(sp.csr_array(np.eye(3)), np.zeros(3), "ReLU"), Layer(sp.csr_array(np.ones((1, 3))),
    ...                np.ones(1))], (3,), (1,), {})
    >>> path = os.path.join(tempfile.mkdtemp(), "fc.onnx")
    >>> places = write_onnx(chain, path)
    >>> [n.op_type for n in onnx.load(path).graph.node]
    ['Gemm', 'Relu', 'Gemm']
    """
    check_relu_chain(chain, "ONNX")
    path = os.fspath(path)
    dtype = np.dtype(dtype)
    model = _onnx_skeleton(chain, dtype, opset)
    weights = [(f"W{i}", layer.M) for i, layer in enumerate(chain.layers, 1)]
    if external is None:
        external = dense_bytes(chain, dtype.itemsize) > SINGLE_FILE_BYTES
    if not external:
        return _write_single_file(model, weights, dtype, path, progress)
    location = data_name or os.path.basename(path) + ".data"
    places = _write_external(weights, dtype, os.path.join(os.path.dirname(os.path.abspath(path)), location),
                             location, progress)
    _add_external(model, weights, dtype, places)
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return places


def onnx_view(chain: Chain, places: list, *, dtype=np.float32, opset: int | None = None):
    """The ModelProto :func:`write_onnx` wrote, with every weight as external data at ``places``
    (its return value): loading it reads the written weights where they lie, without a copy
    (onnxruntime maps them). Save it in the folder of the written file."""
    dtype = np.dtype(dtype)
    model = _onnx_skeleton(chain, dtype, opset)
    _add_external(model, [(f"W{i}", layer.M) for i, layer in enumerate(chain.layers, 1)], dtype, places)
    return model


def _onnx_skeleton(chain: Chain, dtype: np.dtype, opset: int | None):
    """The ONNX model of ``chain`` with every node and small initializer, but no weight matrices."""
    from onnx import TensorProto, helper, numpy_helper

    meta = chain.meta
    in_name, out_name = meta.get("input_name", "input"), meta.get("output_name", "output")
    in_dims = meta.get("input_dims") or [1, *chain.input_shape]
    out_dims = meta["output_dims"] if meta.get("output_dims") is not None else [1, *chain.output_shape]
    batched = meta.get("batched", True)
    out_batched = meta.get("output_batched", batched)  # the output keeps the batch axis in front
    elem = TensorProto.DOUBLE if np.dtype(dtype) == np.float64 else TensorProto.FLOAT
    nodes, inits = [], []
    cur = in_name
    n_in = chain.layers[0].M.shape[1]
    if batched and len(in_dims) != 2:  # a batch of tensors, or of scalars: rows of flat samples
        nodes.append(helper.make_node("Flatten", [cur], ["flat"], axis=1, name="flatten"))
        cur = "flat"
    elif not batched:
        inits.append(numpy_helper.from_array(np.array([1, n_in], dtype=np.int64), "input_shape2d"))
        nodes.append(helper.make_node("Reshape", [cur, "input_shape2d"], ["flat"], name="reshape_in"))
        cur = "flat"
    for i, layer in enumerate(chain.layers, 1):
        inits.append(numpy_helper.from_array(layer.b.astype(dtype), f"B{i}"))
        nodes.append(helper.make_node("Gemm", [cur, f"W{i}", f"B{i}"], [f"z{i}"], transB=1, name=f"gemm{i}"))
        cur = f"z{i}"
        if layer.kind == "ReLU":
            nodes.append(helper.make_node("Relu", [cur], [f"h{i}"], name=f"relu{i}"))
            cur = f"h{i}"
    if out_batched and len(out_dims) == 2:  # the last node writes the original output
        nodes[-1].output[0] = out_name
    else:
        target = [0 if (out_batched and k == 0) else (d if isinstance(d, int) else -1) for k, d in enumerate(out_dims)]
        if not out_batched or len(out_dims) < 2:
            target = [d if isinstance(d, int) else -1 for d in out_dims]
        inits.append(numpy_helper.from_array(np.array(target, dtype=np.int64), "output_shape"))
        nodes.append(helper.make_node("Reshape", [cur, "output_shape"], [out_name], name="reshape_out"))
    graph = helper.make_graph(
        nodes, "convmatrix_fc", [helper.make_tensor_value_info(in_name, elem, _onnx_dims(in_dims))],
        [helper.make_tensor_value_info(out_name, elem, _onnx_dims(out_dims))], inits)
    opsets = [helper.make_opsetid("", opset or max(9, min(int(meta.get("opset", 13)), 21)))]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="convmatrix")
    model.doc_string = describe_origin(meta)
    model.ir_version = helper.find_min_ir_version_for(opsets)
    return model


def dense_blocks(M: sp.csr_array, dtype, block_bytes: int | None = None):
    """The rows of ``M`` as dense C-ordered ``dtype`` arrays of about ``block_bytes`` each
    (default :data:`BLOCK_BYTES`). One buffer is filled again for every block: use (write)
    each block before asking for the next.

    >>> [b.tolist() for b in dense_blocks(sp.csr_array(np.eye(2)), np.float32, block_bytes=8)]
    [[[1.0, 0.0]], [[0.0, 1.0]]]
    """
    M = sp.csr_array(M)
    M.sum_duplicates()
    n_rows, n_cols = M.shape
    rows = max(1, (block_bytes or BLOCK_BYTES) // max(1, n_cols * np.dtype(dtype).itemsize))
    buf = np.zeros((min(rows, n_rows), n_cols), dtype)
    for r0 in range(0, n_rows, rows):
        r1 = min(r0 + rows, n_rows)
        block = buf[:r1 - r0]
        lo, hi = M.indptr[r0], M.indptr[r1]
        where = np.repeat(np.arange(r1 - r0), np.diff(M.indptr[r0:r1 + 1])), M.indices[lo:hi]
        block[where] = M.data[lo:hi]
        yield block
        block[where] = 0  # all zeros again: clear the stored entries only, not the whole block


def _tensor_header(name: str, shape, dtype: np.dtype) -> bytes:
    """A TensorProto's bytes without its data (dims, type, name)."""
    from onnx import TensorProto, helper

    t = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(dtype))
    t.dims.extend(int(d) for d in shape)
    return t.SerializeToString()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _write_single_file(model, weights, dtype: np.dtype, path: str, progress) -> None:
    """The model with its weight matrices, written field by field (protobuf's wire format).

    The graph field goes last; its initializers are the weight tensors, whose raw data
    is streamed from :func:`dense_blocks` after each tensor's length-delimited header, so
    no serialised copy of the weights is ever held.
    """
    graph = model.graph.SerializeToString()
    model.ClearField("graph")
    parts = []
    for name, M in weights:
        n = M.shape[0] * M.shape[1] * dtype.itemsize
        head = _tensor_header(name, M.shape, dtype) + b"\x4a" + _varint(n)  # field 9 (raw_data), bytes
        parts.append((b"\x2a" + _varint(len(head) + n) + head, M))  # GraphProto field 5 (initializer)
    size = len(graph) + sum(len(head) + M.shape[0] * M.shape[1] * dtype.itemsize for head, M in parts)
    places = []
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
        f.write(b"\x3a" + _varint(size) + graph)  # ModelProto field 7 (graph)
        for head, M in parts:
            f.write(head)
            places.append((os.path.basename(path), f.tell(), _write_dense(f, M, dtype)))
            if progress is not None:
                progress.update(1)
    return places


def _write_dense(f, M: sp.csr_array, dtype: np.dtype) -> int:
    """``M``'s dense rows into the open file ``f``, block by block; the number of bytes written."""
    n = 0
    for block in dense_blocks(M, dtype):
        f.write(memoryview(block).cast("B"))
        n += block.nbytes
    return n


def _write_external(weights, dtype: np.dtype, data_path: str, location: str, progress) -> list:
    """The weight matrices into ``data_path``, each at a 4 kB boundary; their ``(location, offset, length)``."""
    places = []
    with open(data_path, "wb") as f:
        for _, M in weights:
            f.write(b"\0" * (-f.tell() % 4096))
            places.append((location, f.tell(), _write_dense(f, M, dtype)))
            if progress is not None:
                progress.update(1)
    return places


def _add_external(model, weights, dtype: np.dtype, places) -> None:
    """Initializers of ``model`` that refer to the weights' bytes at ``places`` (ONNX external data)."""
    from onnx import TensorProto

    for (name, M), (location, offset, length) in zip(weights, places):
        t = TensorProto()
        t.ParseFromString(_tensor_header(name, M.shape, dtype))
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", offset), ("length", length)):
            entry = t.external_data.add()
            entry.key, entry.value = key, str(value)
        model.graph.initializer.append(t)


# -- torch ---------------------------------------------------------------------------------

def _module_spec(mlp) -> list:
    spec = []
    for m in mlp:
        name = type(m).__name__
        if name == "Linear":
            spec.append(["Linear", {"in_features": m.in_features, "out_features": m.out_features}])
        elif name == "Unflatten":
            spec.append(["Unflatten", {"dim": m.dim, "unflattened_size": list(m.unflattened_size)}])
        elif name == "MaskedActivation":
            inner = m.activation
            spec.append(["MaskedActivation", {"kind": type(inner).__name__, "params": _act_params(inner),
                                              "size": int(m.index.numel())}])
        else:
            spec.append([name, _act_params(m)])
    return spec


def _act_params(m) -> dict:
    from .torch_frontend import ACTIVATIONS

    name = type(m).__name__
    if name == "PReLU":
        return {"num_parameters": m.num_parameters}
    return {k: getattr(m, k) for k in ACTIVATIONS.get(name, ())}


def write_pt(chain: Chain, path, *, dtype=None) -> None:
    """``torch.save`` of ``{"format", "modules", "state_dict", shapes}``: loadable with
    ``torch.load(path, weights_only=True)`` and rebuilt by :func:`read_pt` (no pickled code)."""
    import torch

    from .mlp import chain_to_torch

    if chain.meta.get("batched") and chain.output_shape[:1] == (1,):  # ONNX shapes carry the batch axis as 1
        chain = Chain(chain.layers, chain.input_shape[1:], chain.output_shape[1:] or (1,), chain.meta)
    mlp = chain_to_torch(chain, dtype or torch.float32, max_bytes=2**62)
    torch.save({"format": "convmatrix-mlp/1", "modules": _module_spec(mlp), "state_dict": mlp.state_dict(),
                "input_shape": list(chain.input_shape), "output_shape": list(chain.output_shape)},
               os.fspath(path))


def read_pt(path):
    """The ``nn.Sequential`` written by :func:`write_pt` (read with ``weights_only=True``)."""
    import torch

    from .mlp import MaskedActivation

    data = torch.load(os.fspath(path), weights_only=True)
    if not isinstance(data, dict) or data.get("format") != "convmatrix-mlp/1":
        raise ValueError(f"{path}: not a convmatrix MLP file (written by convmatrix convert --format pt)")
    mods = []
    for name, params in data["modules"]:
        if name == "MaskedActivation":
            inner = getattr(torch.nn, params["kind"])(**params["params"])
            mods.append(MaskedActivation(inner, np.zeros(params["size"], dtype=np.int64)))
        elif name == "Unflatten":
            mods.append(torch.nn.Unflatten(params["dim"], tuple(params["unflattened_size"])))
        else:
            mods.append(getattr(torch.nn, name)(**params))
    mlp = torch.nn.Sequential(*mods)
    sd = data["state_dict"]
    mlp = mlp.to(next(iter(v.dtype for v in sd.values() if v.dtype.is_floating_point), torch.float32))
    mlp.load_state_dict(sd)
    return mlp.eval()


# -- NNet ----------------------------------------------------------------------------------

_BIG = 3.4028234663852886e38  # no input clipping: float32's largest value


def write_nnet(chain: Chain, path, *, progress=None) -> None:
    """The NNet text format of ACAS-Xu-style verifiers: ReLU hidden layers, linear output,
    inputs not normalised (means 0, ranges 1, bounds +-3.4e38). Written row block by row
    block (:func:`dense_blocks`): memory stays at one block beyond the sparse chain."""
    check_relu_chain(chain, "NNet")
    layers = _layers_with_output(chain)
    for i, layer in enumerate(layers[:-1], 1):
        if layer.kind != "ReLU":
            raise ValueError(f"layer {i} has no ReLU: NNet needs a ReLU after every hidden layer")
    sizes = [layers[0].M.shape[1]] + [layer.M.shape[0] for layer in layers]
    n_in, n_out = sizes[0], sizes[-1]
    with open(os.fspath(path), "w") as f:
        f.write("// Fully connected ReLU network written by convmatrix (exactly the original network)\n")
        f.write(f"// input shape {list(chain.input_shape)}, output shape {list(chain.output_shape)}\n")
        f.write(f"{len(layers)},{n_in},{n_out},{max(sizes)},\n")
        f.write(",".join(map(str, sizes)) + ",\n0,\n")
        f.write(",".join([repr(-_BIG)] * n_in) + ",\n")
        f.write(",".join([repr(_BIG)] * n_in) + ",\n")
        f.write(",".join(["0.0"] * (n_in + 1)) + ",\n")
        f.write(",".join(["1.0"] * (n_in + 1)) + ",\n")
        for layer in layers:
            for block in dense_blocks(layer.M, np.float64):  # repr: the shortest text that reads back exactly
                f.writelines(",".join(map(repr, row)) + ",\n" for row in block.tolist())
            f.writelines(f"{v!r},\n" for v in layer.b.tolist())
            if progress is not None:
                progress.update(1)


def iter_nnet(path):
    """The ``(W, b)`` of an NNet file's layers, one layer at a time (ReLU between layers, none
    after the last): reading never holds more than one layer."""
    def numbers(f):
        for line in f:
            if not line.startswith("//"):
                yield np.array([v for v in line.strip().rstrip(",").split(",") if v.strip()], dtype=np.float64)

    with open(os.fspath(path)) as f:
        rows = numbers(f)
        n_layers = int(next(rows)[0])
        sizes = [int(v) for v in next(rows)]
        for _ in range(5):  # symmetric flag, input minima, maxima, means, ranges
            next(rows)
        for k in range(n_layers):
            W = np.empty((sizes[k + 1], sizes[k]))
            for r in range(sizes[k + 1]):
                W[r] = next(rows)
            yield W, np.array([next(rows)[0] for _ in range(sizes[k + 1])])


def read_nnet(path) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(W, b), ...]`` of an NNet file (ReLU between layers, none after the last)."""
    return list(iter_nnet(path))


# -- npz -----------------------------------------------------------------------------------

def write_npz(chain: Chain, path) -> None:
    """The chain's sparse layers: ``M{i}_data/indices/indptr/shape``, ``b{i}``, ``act{i}``,
    ``index{i}`` (masked layers) and the input/output shapes, with ``numpy.savez_compressed``."""
    arrays = {"input_shape": np.array(chain.input_shape), "output_shape": np.array(chain.output_shape),
              "layers": np.array(len(chain.layers))}
    for i, layer in enumerate(chain.layers):
        M = sp.csr_array(layer.M)
        arrays.update({f"M{i}_data": M.data, f"M{i}_indices": M.indices, f"M{i}_indptr": M.indptr,
                       f"M{i}_shape": np.array(M.shape), f"b{i}": layer.b, f"act{i}": np.array(layer.kind or "")})
        for k, v in (layer.params or {}).items():
            arrays[f"act{i}_{k}"] = np.asarray(v)
        if layer.index is not None:
            arrays[f"index{i}"] = layer.index
    np.savez_compressed(os.fspath(path), **arrays)


def read_npz(path) -> Chain:
    """The :class:`Chain` written by :func:`write_npz`."""
    with np.load(os.fspath(path)) as z:
        layers = []
        for i in range(int(z["layers"])):
            M = sp.csr_array((z[f"M{i}_data"], z[f"M{i}_indices"], z[f"M{i}_indptr"]), shape=tuple(z[f"M{i}_shape"]))
            kind = str(z[f"act{i}"]) or None
            prefix = f"act{i}_"
            params = {k[len(prefix):]: (z[k].item() if z[k].ndim == 0 else z[k])
                      for k in z.files if k.startswith(prefix)}
            layers.append(Layer(M, z[f"b{i}"], kind, params, z[f"index{i}"] if f"index{i}" in z.files else None))
        return Chain(layers, tuple(int(d) for d in z["input_shape"]), tuple(int(d) for d in z["output_shape"]), {})


def describe_origin(meta: dict) -> str:
    """The written model's doc string: what it computes of the original (a dropped final operation)."""
    text = "A fully connected ReLU network that computes exactly what the original network computes"
    if meta.get("dropped_final"):
        text += (f", except its final {meta['dropped_final']}, which was dropped: a strictly increasing (or "
                 "argmax-preserving) operation, so the argmax of the output is the original's")
    return text + "; written by convmatrix."


def describe_size(chain: Chain) -> str:
    return f"{format_bytes(dense_bytes(chain))} dense, {format_bytes(sparse_bytes(chain))} sparse"
