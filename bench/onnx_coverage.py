"""How many of the ONNX project's own backend node tests convert exactly: graphs convmatrix's
tests did not generate.

Every test case of ``onnx.backend.test.case.node`` is cut to its first input (float32; the
other inputs become constants, only the first output is kept), converted as ``convmatrix
convert`` does (validation, lowering, a Gemm/Relu chain within 2 GB of dense weights), and
compared with onnxruntime on the case's own input and two random ones. Where they differ,
the converted network is also compared with the output the ONNX specification's test data
gives (onnxruntime is not always the specification).

    PYTHONPATH=src python bench/onnx_coverage.py [NAME_PART ...]

Prints the counts per outcome and the cases that are neither converted nor refused as not
piecewise linear / not continuous, one per line.
"""

from __future__ import annotations

import collections
import os
import sys
import tempfile
import warnings

import numpy as np

LIMIT = 2 * 10**9  # convert's default --max-bytes


def cut(case):
    """The case's model with its first input only (the others as initializers), or None."""
    import onnx
    from onnx import numpy_helper

    ins, outs = case.data_sets[0]
    if not ins or not all(isinstance(v, np.ndarray) for v in ins) or ins[0].dtype != np.float32:
        return None
    m = onnx.ModelProto()
    m.CopyFrom(case.model)
    g = m.graph
    real = [i for i in g.input if i.name not in {t.name for t in g.initializer}]
    for vi, val in zip(real[1:], ins[1:]):
        g.initializer.append(numpy_helper.from_array(val, vi.name))
    del g.output[1:]
    return m, ins[0], outs[0] if outs and isinstance(outs[0], np.ndarray) else None


def outcome(m, x, expected, folder):
    """``(kind, detail)`` of one cut model."""
    import onnx
    import onnxruntime as ort

    from convmatrix.network.export import check_relu_chain, dense_bytes, write_onnx
    from convmatrix.network.onnx_frontend import from_onnx
    from convmatrix.network.passes import expand_max, lower, relu_only

    src, dst = os.path.join(folder, "in.onnx"), os.path.join(folder, "out.onnx")
    onnx.save(m, src)
    try:
        chain = lower(relu_only(expand_max(from_onnx(src))))
        check_relu_chain(chain, "ONNX")  # Sigmoid, Tanh, ... kept as activations: not a Gemm/Relu chain
    except ValueError as exc:
        text = str(exc)
        if any(w in text for w in ("not piecewise linear", "not continuous", "not affine", "cannot hold exactly")):
            return "refused: not piecewise linear or not continuous", text
        if "onnxruntime cannot run" in text or "onnx.checker" in text:
            return "refused: onnxruntime cannot run it", text
        return "refused: other", text
    if dense_bytes(chain) > LIMIT:
        return "too large for dense Gemm layers", f"{dense_bytes(chain)} bytes"
    write_onnx(chain, dst)
    s1, s2 = (ort.InferenceSession(p, providers=["CPUExecutionProvider"]) for p in (src, dst))
    xs = [x] + [np.random.default_rng(k).standard_normal(x.shape).astype(np.float32) for k in range(2)]
    for k, xx in enumerate(xs):
        want = s1.run(None, {s1.get_inputs()[0].name: xx})[0]
        got = s2.run(None, {s2.get_inputs()[0].name: xx})[0]
        scale = max(1.0, float(np.abs(want[np.isfinite(want)]).max(initial=0)))
        if got.shape != want.shape or not np.allclose(got, want, rtol=0, atol=1e-4 * scale, equal_nan=True):
            spec = k == 0 and expected is not None and got.shape == expected.shape and \
                np.allclose(got, expected, rtol=0, atol=1e-4 * scale, equal_nan=True)
            return ("differs from onnxruntime, equals the specification's output" if spec else "WRONG"), ""
    return "converted exactly", ""


def main(parts) -> int:
    warnings.simplefilter("ignore")
    import onnxruntime as ort
    from onnx.backend.test.case.node import collect_testcases

    ort.set_default_logger_severity(4)
    counts, notes = collections.Counter(), []
    for case in collect_testcases():
        if parts and not any(p in case.name for p in parts):
            continue
        got = cut(case)
        if got is None:
            counts["skipped: first input not float32"] += 1
            continue
        with tempfile.TemporaryDirectory() as folder:
            try:
                kind, detail = outcome(*got, folder)
            except MemoryError:
                kind, detail = "out of memory (dense Gemm layers near the limit)", ""
            except Exception as exc:  # noqa: BLE001 - a traceback is what this looks for
                kind, detail = "TRACEBACK", f"{type(exc).__name__}: {exc}"
        counts[kind] += 1
        if kind in ("WRONG", "TRACEBACK", "refused: other", "differs from onnxruntime, equals the specification's output"):
            notes.append(f"{kind}: {case.name}: {detail.splitlines()[0][:200] if detail else ''}")
    for kind, n in counts.most_common():
        print(f"{n:6d}  {kind}")
    print(*notes, sep="\n")
    return 1 if counts["WRONG"] or counts["TRACEBACK"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
