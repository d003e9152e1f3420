"""The lattice i-quants IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M.
The blocks the run-time tests read are ggml's (ggml_quantize_chunk with an
importance matrix, libggml-python) or random bytes, where any byte pattern is
a valid block (only the fp16 scale can be NaN/Inf).

  quantize     == ggml_quantize_chunk byte for byte, with and without an
                  importance matrix (IQ1_S, IQ2_XXS, IQ2_XS need one:
                  ImatrixRequiredError, LM_ERR_ARG natively); the same bytes
                  from any number of threads, the lattices built once
  dequantize   == gguf.quants.dequantize and ggml's dequantize_row_<t>, bit for bit
  scalar dot   == the float64 dot of the dequantized weights and Q8_K
                  activations within float32 summation error; ~ ggml's _generic dot
  AVX2 dot     == the scalar dot, bit for bit (exact integer sums, same float order)
  x4 kernels   matmul of any number of columns == one column at a time, bit for bit
  matmul       ~ the float64 product of the dequantized weights (NMSE)
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import zlib

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from lamina import quants
from lamina.errors import ImatrixRequiredError
from lamina.native import ffi, last_error, lib
from support.distributions import DISTRIBUTIONS, make, make_imatrix, nmse
from support.ggml_oracle import oracle

IQ_TYPES = [T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ1_S, T.IQ1_M]
BLOCK_BYTES = {T.IQ2_XXS: 66, T.IQ2_XS: 74, T.IQ2_S: 82, T.IQ3_XXS: 98, T.IQ3_S: 110, T.IQ1_S: 50, T.IQ1_M: 56}
N = 2560  # 10 super-blocks: the SIMD dots take 8 at a time, then 2 alone
ROWS = 8
DISTS = ["normal", "outliers", "heavy_tails", "weights_like", "sparse", "all_zero", "large"]
NEEDS_IMATRIX = {T.IQ2_XXS, T.IQ2_XS, T.IQ1_S}

HAS_AVX2 = bool(lib.lm_cpu_has_avx2())
needs_avx2 = pytest.mark.skipif(not HAS_AVX2, reason="CPU lacks AVX2/FMA/F16C")


def ids(values):
    return [v.name for v in values]


@functools.cache
def ggml_blocks(qtype: T, dist: str, rows: int = ROWS, n: int = N) -> np.ndarray:
    """u8 [rows, row_bytes]: ggml's quantizer with an importance matrix (IQ2_XXS,
    IQ2_XS, IQ1_S and IQ1_M require one)"""
    out = oracle().quantize_chunk(qtype, make(dist, rows, n, seed=3), make_imatrix(n, seed=4))
    out.setflags(write=False)
    return out


def random_blocks(qtype: T, rows: int, n: int, seed: int, finite: bool) -> np.ndarray:
    """random bytes; with finite=True the fp16 scale is set to a random normal
    number in [2^-10, 2^-4), so every weight is a finite grid value"""
    rng = np.random.default_rng([seed, int(qtype)])
    data = rng.integers(0, 256, size=(rows, quants.row_bytes(qtype, n)), dtype=np.uint8)
    if finite:
        blocks = data.reshape(-1, BLOCK_BYTES[qtype])
        d = rng.integers(0x1400, 0x2C00, size=blocks.shape[0]).astype(np.uint16)
        if qtype == T.IQ1_M:  # d is the top nibbles of the four 16-bit scale words
            words = blocks[:, -8:].copy().view(np.uint16)
            for k in range(4):
                words[:, k] = (words[:, k] & 0x0FFF) | (((d >> (4 * k)) & 0xF) << 12)
            blocks[:, -8:] = words.view(np.uint8)
        else:
            blocks[:, :2] = d.view(np.uint8).reshape(-1, 2)
    return data


def q8_K(x: np.ndarray) -> np.ndarray:
    return quants.quantize_activations(x, T.Q8_K)


def assert_same_floats(got: np.ndarray, want: np.ndarray) -> None:
    """bit for bit, NaN where NaN"""
    got = np.asarray(got, np.float32)
    want = np.asarray(want, np.float32)
    assert got.shape == want.shape
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


# ------------------------------------------------------------- the type


@pytest.mark.parametrize("qtype", IQ_TYPES, ids=ids(IQ_TYPES))
def test_sizes_and_partner_are_ggml_s(qtype):
    assert quants.block_size(qtype) == 256
    assert quants.block_bytes(qtype) == BLOCK_BYTES[qtype] == gguf.GGML_QUANT_SIZES[qtype][1]
    assert quants.vec_dot_type(qtype) == T.Q8_K


@pytest.mark.parametrize("qtype", IQ_TYPES, ids=ids(IQ_TYPES))
def test_runs_and_can_be_quantized(qtype):
    assert quants.can_run(qtype) and lib.lm_type_supported(int(qtype)) == 1
    assert quants.can_quantize(qtype) and lib.lm_type_quantizable(int(qtype)) == 1
    assert quants.needs_imatrix(qtype) == (qtype in NEEDS_IMATRIX)


@pytest.mark.parametrize("qtype", sorted(NEEDS_IMATRIX), ids=ids(sorted(NEEDS_IMATRIX)))
def test_missing_imatrix_is_a_typed_error(qtype):
    """ggml aborts without one (ggml_quantize_requires_imatrix); lamina refuses by name"""
    x = make("normal", 2, 256, seed=1)
    with pytest.raises(ImatrixRequiredError, match=qtype.name) as err:
        quants.quantize(x, qtype)
    assert err.value.qtype == qtype.name and "importance matrix" in str(err.value)
    out = np.zeros(2 * BLOCK_BYTES[qtype], np.uint8)
    rc = lib.lm_quantize(int(qtype), ffi.from_buffer("float[]", x), ffi.from_buffer(out), 2, 256, ffi.NULL)
    assert rc == lib.LM_ERR_ARG
    assert qtype.name.lower() in last_error() and "importance matrix" in last_error()
    assert not out.any()


def test_quantizable_types_are_unchanged():
    for t in (T.F32, T.F16, T.Q4_0, T.Q8_0, T.Q4_K, T.Q6_K, T.IQ4_XS, T.TQ2_0, T.MXFP4, T.NVFP4, T.Q8_K):
        assert quants.can_quantize(t), t.name
    assert not quants.can_run(T.Q8_K) and not quants.can_run(T.Q8_1)  # activation formats only


# ---------------------------------------------------------- dequantize


@pytest.mark.parametrize("dist", DISTS)
@pytest.mark.parametrize("qtype", IQ_TYPES, ids=ids(IQ_TYPES))
def test_dequantize_ggml_blocks(qtype, dist):
    data = ggml_blocks(qtype, dist)
    ours = quants.dequantize(data, qtype)
    assert_same_floats(ours, gguf.quants.dequantize(data, qtype))
    ggml = np.stack([oracle().dequantize_row(qtype, data[r], N) for r in range(ROWS)])
    assert_same_floats(ours, ggml)


@pytest.mark.parametrize("qtype", IQ_TYPES, ids=ids(IQ_TYPES))
def test_dequantize_random_bytes(qtype):
    """any byte pattern, NaN/Inf fp16 scales included"""
    data = random_blocks(qtype, 64, 2048, seed=11, finite=False)
    with np.errstate(invalid="ignore", over="ignore"):
        want = gguf.quants.dequantize(data, qtype)
    ours = quants.dequantize(data, qtype)
    assert_same_floats(ours, want)
    ggml = np.stack([oracle().dequantize_row(qtype, data[r], 2048) for r in range(8)])
    assert_same_floats(ours[:8], ggml)


# ----------------------------------------------------------------- dots


def float_dot(w_row: np.ndarray, qtype: T, xq: np.ndarray) -> tuple[float, float]:
    """float64 dot of the dequantized weights and activations, and sum |w_i a_i|"""
    w = quants.dequantize(w_row[None], qtype)[0].astype(np.float64)
    a = quants.dequantize(xq[None], T.Q8_K)[0].astype(np.float64)
    return float(w @ a), float(np.abs(w) @ np.abs(a))


def act_dist(weight_dist: str) -> str:
    """activations of a like distribution, never all zero"""
    return "normal" if weight_dist in ("all_zero", "random_bytes") else weight_dist


def weight_cases(qtype):
    for dist in DISTS:
        yield dist, ggml_blocks(qtype, dist)
    yield "random_bytes", random_blocks(qtype, ROWS, N, seed=5, finite=True)


@pytest.mark.parametrize("qtype", IQ_TYPES, ids=ids(IQ_TYPES))
def test_scalar_dot_is_the_float_dot(qtype):
    """exact integer block sums; only the float32 terms and their sum round:
    a few float32 ulps of sum |w_i a_i|"""
    for dist, w in weight_cases(qtype):
        xq = q8_K(make(act_dist(dist), 1, N, seed=6)[0])
        for r in range(ROWS):
            got = quants.vec_dot(w[r], qtype, xq, impl="scalar")
            want, scale = float_dot(w[r], qtype, xq)
            assert abs(got - want) <= 1e-6 * scale + 1e-30, f"{qtype.name} {dist} row {r}: {got} vs {want}"


@pytest.mark.parametrize("qtype", IQ_TYPES, ids=ids(IQ_TYPES))
def test_scalar_dot_against_ggml_generic(qtype):
    """ggml's ggml_vec_dot_<t>_q8_K_generic sums the same integers in another float order"""
    for dist, w in weight_cases(qtype):
        xq = q8_K(make(act_dist(dist), 1, N, seed=7)[0])
        for r in range(ROWS):
            got = quants.vec_dot(w[r], qtype, xq, impl="scalar")
            ggml = oracle().vec_dot(qtype, T.Q8_K, N, w[r], xq, generic=True)
            _, scale = float_dot(w[r], qtype, xq)
            assert abs(got - ggml) <= 1e-6 * scale + 1e-30, f"{qtype.name} {dist} row {r}: {got} vs ggml {ggml}"


@needs_avx2
@pytest.mark.parametrize("qtype", IQ_TYPES, ids=ids(IQ_TYPES))
def test_avx2_dot_is_the_scalar_dot_bit_for_bit(qtype):
    for n in (256, 2048, N):  # 1 block, 8 (one SIMD batch), 8 + 2
        for dist, w in weight_cases(qtype):
            xq = q8_K(make(act_dist(dist), 1, n, seed=8)[0])
            for r in range(ROWS):
                row = w[r, : quants.row_bytes(qtype, n)]
                got = np.float32(quants.vec_dot(row, qtype, xq, impl="avx2"))
                want = np.float32(quants.vec_dot(row, qtype, xq, impl="scalar"))
                assert got.view(np.uint32) == want.view(np.uint32), f"{qtype.name} {dist} n={n} row {r}"


# --------------------------------------------------------------- matmul


@needs_avx2
@pytest.mark.parametrize("ncols", [2, 3, 4, 5, 8, 17])
@pytest.mark.parametrize("qtype", IQ_TYPES, ids=ids(IQ_TYPES))
def test_matmul_columns_independent_of_grouping(qtype, ncols):
    """the few-column kernels give each column the single-column kernel's bits"""
    w = ggml_blocks(qtype, "weights_like", rows=19)
    x = make("normal", ncols, N, seed=9)
    for threads in (1, 2):
        y = quants.matmul(w, qtype, x, n_threads=threads, impl="avx2")
        alone = np.concatenate(
            [quants.matmul(w, qtype, x[c : c + 1], n_threads=threads, impl="avx2") for c in range(ncols)]
        )
        np.testing.assert_array_equal(y, alone)
    acts = [q8_K(x[c]) for c in range(min(ncols, 4))]
    single = np.array([[quants.vec_dot(w[r], qtype, a, impl="avx2") for r in range(19)] for a in acts], np.float32)
    np.testing.assert_array_equal(y[: len(acts)], single)


@pytest.mark.parametrize("impl", ["scalar", "auto"])
@pytest.mark.parametrize("qtype", IQ_TYPES, ids=ids(IQ_TYPES))
def test_matmul_matches_float_product(qtype, impl):
    """lm_matmul against the float64 product of the dequantized weights with
    the f32 activations: only the Q8_K rounding of the activations differs"""
    w = ggml_blocks(qtype, "weights_like", rows=37)
    x = make("normal", 7, N, seed=10)
    y = quants.matmul(w, qtype, x, n_threads=2, impl=impl)
    ref = x.astype(np.float64) @ quants.dequantize(w, qtype).astype(np.float64).T
    assert nmse(y, ref) < 1e-4


# ------------------------------------------------------------- quantize

# every distribution of support.distributions, and rows built to reach the
# quantizers' corners
QUANT_DISTS = [*DISTRIBUTIONS, "zero_sub_blocks", "one_outlier", "tiny_and_normal"]
# (rows, n): one super-block, a few rows of four, ten (the SIMD batch split)
QUANT_SHAPES = [(3, 256), (4, 1024), (2, 2560)]


def quant_input(dist: str, rows: int, n: int, seed: int) -> np.ndarray:
    """f32 [rows, n]. zero_sub_blocks: whole 16- and 32-weight sub-blocks of
    zeros between normal ones (IQ3_S's cursor quirk, the skipped sub-blocks
    of every type); one_outlier: normal rows with one weight 1000x the rest;
    tiny_and_normal: sub-blocks around every group-max epsilon (1e-15 .. 1e-7)
    next to normal ones."""
    rng = np.random.default_rng([seed, n, rows, zlib.crc32(dist.encode())])
    if dist in DISTRIBUTIONS:
        return make(dist, rows, n, seed=seed)
    x = rng.standard_normal((rows, n)).astype(np.float32)
    if dist == "zero_sub_blocks":
        for r in range(rows):
            for b in rng.choice(n // 16, size=n // 64, replace=False):
                x[r, 16 * b : 16 * b + 16] = 0.0
            x[r, :32] = 0.0  # the first sub-block of the row
    elif dist == "one_outlier":
        x[np.arange(rows), rng.integers(0, n, rows)] = rng.choice([-1000.0, 1000.0], rows)
    elif dist == "tiny_and_normal":
        scales = np.array([1e-16, 1e-13, 1e-11, 5e-9, 1e-8, 5e-8, 2e-7, 1.0], np.float32)
        x *= scales[rng.integers(0, len(scales), (rows, n // 16))].repeat(16, axis=1)
    return x


def assert_same_blocks(qtype: T, ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert ours.shape == ref.shape
    if np.array_equal(ours, ref):
        return
    bb = BLOCK_BYTES[qtype]
    bad = np.nonzero((ours.reshape(-1, bb) != ref.reshape(-1, bb)).any(axis=1))[0]
    i = int(bad[0])
    pytest.fail(
        f"{qtype.name} {what}: {len(bad)} of {ours.size // bb} blocks differ, first #{i}:\n"
        f"  ours {ours.reshape(-1, bb)[i].tolist()}\n  ggml {ref.reshape(-1, bb)[i].tolist()}"
    )


def imatrix_cases(qtype: T, n: int, seed: int) -> dict[str, np.ndarray | None]:
    some_zero = make_imatrix(n, seed=seed + 1)
    some_zero[:: max(1, n // 37)] = 0.0
    cases: dict[str, np.ndarray | None] = {"calibrated": make_imatrix(n, seed=seed), "some_zero": some_zero}
    if qtype not in NEEDS_IMATRIX:
        cases["none"] = None
    return cases


@pytest.mark.parametrize("dist", QUANT_DISTS)
@pytest.mark.parametrize("qtype", IQ_TYPES, ids=ids(IQ_TYPES))
def test_quantize_is_ggml_byte_for_byte(qtype, dist):
    """lamina's quantizer == ggml_quantize_chunk for every shape, seed and
    importance matrix (or none, where the type allows it)"""
    for rows, n in QUANT_SHAPES:
        for seed in (1, 2):
            x = quant_input(dist, rows, n, seed)
            for name, imatrix in imatrix_cases(qtype, n, seed).items():
                ours = quants.quantize(x, qtype, imatrix=imatrix)
                ref = oracle().quantize_chunk(qtype, x, imatrix)
                assert_same_blocks(qtype, ours, ref, f"{dist} {rows}x{n} seed {seed} imatrix {name}")


# NMSE of gaussian weights under a random importance matrix: ~1.25x what
# ggml's bytes (the same bytes) give, a sanity bound by bits per weight
ROUND_TRIP_NMSE = {
    T.IQ1_S: 0.4,
    T.IQ1_M: 0.36,
    T.IQ2_XXS: 0.3,
    T.IQ2_XS: 0.18,
    T.IQ2_S: 0.11,
    T.IQ3_XXS: 0.075,
    T.IQ3_S: 0.035,
}


@pytest.mark.parametrize("qtype", IQ_TYPES, ids=ids(IQ_TYPES))
def test_quantize_round_trip(qtype):
    """lamina's blocks dequantize as gguf-py's do, and near the input"""
    x = make("weights_like", 8, N, seed=21)
    imatrix = make_imatrix(N, seed=22)
    data = quants.quantize(x, qtype, imatrix=imatrix)
    ours = quants.dequantize(data, qtype)
    assert_same_floats(ours, gguf.quants.dequantize(data, qtype))
    assert nmse(ours, x) < ROUND_TRIP_NMSE[qtype]


THREADED_SCRIPT = """
import sys, threading
import numpy as np
from lamina import quants
qtype, rows, n = sys.argv[1], 48, 1024
rng = np.random.default_rng(5)
x = (rng.standard_normal((rows, n)) * 0.05).astype(np.float32)
imatrix = (rng.exponential(1.0, n) ** 2 + 1e-3).astype(np.float32)
out = [None] * 8
barrier = threading.Barrier(8)
def run(i):
    barrier.wait()  # all threads meet the unbuilt lattice at once
    out[i] = quants.quantize(x[6 * i : 6 * i + 6], qtype, imatrix=imatrix)
threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
sys.stdout.buffer.write(np.concatenate(out).tobytes())
sys.stdout.buffer.write(quants.quantize(x, qtype, imatrix=imatrix).tobytes())
"""


@pytest.mark.parametrize("qtype", IQ_TYPES, ids=ids(IQ_TYPES))
def test_threads_write_the_same_bytes(qtype):
    """a fresh process: eight threads quantize row chunks at once while the
    lattice is built under its once-guard; their bytes == one thread's == ggml's"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-c", THREADED_SCRIPT, qtype.name], capture_output=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    threaded, single = np.frombuffer(r.stdout, np.uint8).reshape(2, 48, -1)
    np.testing.assert_array_equal(threaded, single)
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((48, 1024)) * 0.05).astype(np.float32)
    imatrix = (rng.exponential(1.0, 1024) ** 2 + 1e-3).astype(np.float32)
    assert_same_blocks(qtype, single, oracle().quantize_chunk(qtype, x, imatrix), "threaded")
