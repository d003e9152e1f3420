"""GPTQ INT4 matmul kernels (native/gptq, simd/x86/gptq_int4_avx2.c) against a
float64 numpy oracle built from the unpacked levels, scales and zeros — not
from the kernels' own packing — so a packing mistake on either side shows.

The kernels keep activations in f32 and only re-associate sums, so every path
is held to nmse < 1e-10 against the oracle (observed ~1e-13)."""

import numpy as np
import pytest

from lamina.gptq.kernels import GPTQKernelError, GPTQMatrix
from lamina.gptq.pack import pack
from lamina.native import ffi, lib
from lamina.quants import ThreadPool
from support.distributions import nmse
from support.gptq_cases import random_gptq

HAS_AVX2 = bool(lib.lm_cpu_has_avx2())
IMPLS = ["scalar", "auto"] + (["avx2"] if HAS_AVX2 else [])
TOL = 1e-10

# (n_out, n_in, group_size): n_out rarely a multiple of 16/64; groups of 32..128,
# one group per row (-1, 0), a last group cut short (200 = 3*64 + 8), groups
# that do not fill whole words (20: the kernels' general path), and a run of
# one group longer than the kernels' run length (-1 with n_in 1024)
SHAPES = [
    (40, 256, 32),
    (136, 256, 64),
    (72, 384, 128),
    (24, 200, 64),
    (104, 512, -1),
    (8, 8, -1),
    (200, 128, 128),
    (56, 1024, -1),
    (48, 64, 0),
    (24, 200, 20),
]
NCOLS = [1, 2, 3, 8, 33, 64]


def make(n_out, n_in, gs, act_order=False, sym=False, seed=0, explicit_g_idx=False):
    """-> (GPTQMatrix, W float64 [n_out, n_in]) for random levels, scales, zeros."""
    case = random_gptq(np.random.default_rng(seed), n_in, n_out, gs, act_order, sym=sym, scale=(0.005, 0.02))
    p = case.packed
    keep_g_idx = act_order or explicit_g_idx
    return GPTQMatrix(p.qweight, p.scales, p.qzeros, p.g_idx if keep_g_idx else None, gs), case.weights


def _x(ncols, n_in, seed):
    return np.random.default_rng(seed + 1000).standard_normal((ncols, n_in)).astype(np.float32)


# ---------------------------------------------------------------- accuracy


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("sym", [False, True], ids=["asym", "sym"])
@pytest.mark.parametrize("act_order", [False, True], ids=["ordered", "act_order"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matmul_matches_float64_oracle(shape, act_order, sym, impl):
    n_out, n_in, gs = shape
    m, w = make(n_out, n_in, gs, act_order, sym, seed=n_out + n_in)
    for ncols in NCOLS:
        x = _x(ncols, n_in, ncols)
        y = m.matmul(x, impl=impl)
        assert y.shape == (ncols, n_out) and y.dtype == np.float32
        err = nmse(y, x.astype(np.float64) @ w.T)
        assert err < TOL, f"ncols={ncols}: nmse {err:.3g}"


@pytest.mark.skipif(not HAS_AVX2, reason="CPU lacks AVX2/FMA/F16C")
@pytest.mark.parametrize("act_order", [False, True], ids=["ordered", "act_order"])
def test_avx2_agrees_with_scalar_reference(act_order):
    m, _ = make(264, 1024, 128, act_order, seed=5)
    x = _x(19, 1024, 5)
    ref = m.matmul(x, impl="scalar")
    assert nmse(m.matmul(x, impl="avx2"), ref) < TOL
    # the SIMD path really ran: it sums in another order than the reference
    assert not np.array_equal(m.matmul(x, impl="avx2"), ref)


def test_explicit_monotonic_g_idx_equals_none():
    """g_idx = i // group_size given as an array takes the same fast path as None."""
    m_none, w = make(72, 384, 128, seed=3)
    m_arr, _ = make(72, 384, 128, seed=3, explicit_g_idx=True)
    x = _x(5, 384, 3)
    for impl in IMPLS:
        assert np.array_equal(m_none.matmul(x, impl=impl), m_arr.matmul(x, impl=impl))
    assert nmse(m_arr.matmul(x), x.astype(np.float64) @ w.T) < TOL


def test_v1_packed_zeros_are_converted():
    """from_packed takes a v1 ("zero minus one") pack and hands the kernels v2."""
    rng = np.random.default_rng(9)
    n_out, n_in, gs = 32, 128, 64
    levels = rng.integers(0, 16, (n_out, n_in))
    scales = rng.uniform(0.01, 0.02, (2, n_out)).astype(np.float16)
    zeros = rng.integers(1, 16, (2, n_out))  # 1..15: storable in v1 and in v2
    g_idx = np.arange(n_in) // gs
    packed = pack(levels, scales, zeros, g_idx, fmt="v1")
    m = GPTQMatrix.from_packed(packed, gs)
    ref = scales.astype(np.float64)[g_idx].T * (levels - zeros[g_idx].T)
    x = _x(3, n_in, 9)
    assert nmse(m.matmul(x), x.astype(np.float64) @ ref.T) < TOL
    # read as v2 without conversion, every zero would be off by one
    raw = GPTQMatrix(packed.qweight, packed.scales, packed.qzeros, None, gs)
    assert nmse(raw.matmul(x), x.astype(np.float64) @ ref.T) > 1e-4


@pytest.mark.parametrize("shape", [(72, 384, 128), (136, 256, 64), (24, 200, 64), (40, 256, 32)], ids=str)
def test_act_order_runs_as_a_plain_matrix_in_group_order(shape):
    """An act-order matrix gets a group-order copy at load (group_order.py):
    its product is bit for bit the plain matrix's on the gathered inputs (the
    same kernels run), and still the oracle's."""
    n_out, n_in, gs = shape
    m, w = make(n_out, n_in, gs, act_order=True, seed=n_out)
    go = m.grouped
    assert go is not None and go.perm.shape == (n_in,)
    assert np.array_equal(np.sort(go.perm), np.arange(n_in))
    g_sorted = m.g_idx[go.perm]
    assert np.all(np.diff(g_sorted) >= 0)
    plain = GPTQMatrix(go.qweight, m.scales.view(np.float16), m.qzeros, go.g_idx, gs)
    assert plain.grouped is None
    for ncols in (1, 5):
        x = _x(ncols, n_in, ncols)
        for impl in IMPLS:
            y = m.matmul(x, impl=impl)
            assert np.array_equal(y, plain.matmul(np.ascontiguousarray(x[:, go.perm]), impl=impl)), impl
            assert nmse(y, x.astype(np.float64) @ w.T) < TOL


def test_act_order_groups_that_split_words_keep_the_general_path():
    m, w = make(24, 200, 20, act_order=True, seed=2)  # groups of 20: a word would hold two groups
    assert m.grouped is None
    m_in_order, _ = make(24, 200, 64, explicit_g_idx=True)
    assert m_in_order.grouped is None  # already in order: nothing to repack
    x = _x(3, 200, 2)
    assert nmse(m.matmul(x), x.astype(np.float64) @ w.T) < TOL


# ------------------------------------------------------- threads and slices


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("act_order", [False, True], ids=["ordered", "act_order"])
def test_threads_give_identical_results(impl, act_order):
    m, _ = make(200, 512, 64, act_order, seed=11)
    for ncols in (1, 7):
        x = _x(ncols, 512, 11)
        ref = m.matmul(x, impl=impl, pool=ThreadPool(1))
        for n_threads in (2, 3, 5):
            assert np.array_equal(m.matmul(x, impl=impl, pool=ThreadPool(n_threads)), ref), n_threads
        assert np.array_equal(m.matmul_standalone(x, impl=impl, n_threads=3), ref)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("act_order", [False, True], ids=["ordered", "act_order"])
@pytest.mark.parametrize(
    "o0,o1", [(0, 136), (3, 5), (1, 136), (0, 133), (5, 131), (8, 72), (7, 9), (17, 18), (130, 136), (40, 40)]
)
def test_output_slices(o0, o1, act_order, impl):
    """lm_gptq_matmul_into on [o0, o1): any alignment, written at y[c, o - o0]
    of rows ldy apart, nothing written past o1 - o0."""
    m, w = make(136, 256, 64, act_order, seed=13)
    for ncols in (1, 5):
        x = _x(ncols, 256, 13)
        ldy = o1 - o0 + 3
        y = m.matmul_rows(x, o0, o1, impl=impl, n_threads=2, ldy=ldy)
        assert y.shape == (ncols, ldy)
        assert np.all(np.isnan(y[:, o1 - o0 :])), "wrote past the slice"
        ref = x.astype(np.float64) @ w[o0:o1].T
        assert nmse(y[:, : o1 - o0], ref) < TOL
        assert np.allclose(y[:, : o1 - o0], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max(initial=1.0))


# -------------------------------------------------------------- bad inputs


def _packed(n_out=16, n_in=64, gs=32, seed=0):
    m, _ = make(n_out, n_in, gs, act_order=True, seed=seed)
    return m.qweight, m.scales.view(np.float16), m.qzeros, m.g_idx


def test_g_idx_out_of_range_is_rejected():
    qw, sc, qz, g = _packed()
    bad = g.copy()
    bad[17] = 2  # only groups 0 and 1 exist
    with pytest.raises(GPTQKernelError, match=r"g_idx\[17\]=2 is outside \[0, n_groups=2\)"):
        GPTQMatrix(qw, sc, qz, bad, 32)
    bad[17] = -1
    with pytest.raises(GPTQKernelError, match=r"g_idx\[17\]=-1"):
        GPTQMatrix(qw, sc, qz, bad, 32)


@pytest.mark.parametrize(
    "case,pattern",
    [
        ("g_idx_len", r"g_idx must have 64 entries"),
        ("scales_cols", r"scales must be \[n_groups, 16\]"),
        ("qzeros_shape", r"qzeros must be \[2, 2\]"),
        ("n_groups", r"n_groups=3 does not match n_in=64 with group_size=32 \(expected 2 groups\)"),
        ("group_size", r"group_size=-5 must be positive"),
        ("qweight_dtype", r"qweight must be int32, got dtype float64"),
        ("scales_dtype", r"scales must be float16"),
        ("n_out", r"n_out=12 .* must be a multiple of 8"),
    ],
)
def test_mismatched_arrays_name_what_was_expected(case, pattern):
    qw, sc, qz, g = _packed()
    args = dict(qweight=qw, scales=sc, qzeros=qz, g_idx=g, group_size=32)
    if case == "g_idx_len":
        args["g_idx"] = g[:60]
    elif case == "scales_cols":
        args["scales"] = sc[:, :8]
    elif case == "qzeros_shape":
        args["qzeros"] = qz[:, :1]
    elif case == "n_groups":
        args["scales"] = np.concatenate([sc, sc[:1]])
        args["qzeros"] = np.concatenate([qz, qz[:1]])
        args["g_idx"] = None
    elif case == "group_size":
        args["group_size"] = -5
    elif case == "qweight_dtype":
        args["qweight"] = qw.astype(np.float64)
    elif case == "scales_dtype":
        args["scales"] = sc.astype(np.float32)
    elif case == "n_out":
        args["qweight"] = qw[:, :12]
        args["scales"] = sc[:, :12]
    with pytest.raises(GPTQKernelError, match=pattern):
        GPTQMatrix(**args)


def test_bad_activations_and_requests():
    m, _ = make(16, 64, 32)
    with pytest.raises(GPTQKernelError, match=r"x must be \[ncols, 64\]"):
        m.matmul(np.zeros((2, 72), np.float32))
    with pytest.raises(GPTQKernelError, match="x must be float32"):
        m.matmul(np.zeros((2, 64), np.float64))
    with pytest.raises(GPTQKernelError, match="impl must be one of"):
        m.matmul(np.zeros((1, 64), np.float32), impl="sse9")
    with pytest.raises(GPTQKernelError, match=r"output range \[4, 20\)"):
        m.matmul_rows(np.zeros((1, 64), np.float32), 4, 20)


def _c_matrix(n_in=64, n_out=16, gs=32, n_groups=2, keep=None):
    """An lm_gptq_matrix over real buffers, with whatever sizes the test claims."""
    qw = np.zeros((max(n_in, 8) // 8 + 1, max(n_out, 8) + 8), np.int32)
    sc = np.zeros((n_groups + 1, max(n_out, 8) + 8), np.uint16)
    qz = np.zeros((n_groups + 1, max(n_out, 8) // 8 + 1), np.int32)
    keep = [] if keep is None else keep
    keep += [qw, sc, qz]
    c = ffi.new("lm_gptq_matrix *")
    c.qweight = ffi.from_buffer("int32_t[]", qw)
    c.scales = ffi.from_buffer("uint16_t[]", sc)
    c.qzeros = ffi.from_buffer("int32_t[]", qz)
    c.g_idx = ffi.NULL
    c.n_in, c.n_out, c.group_size, c.n_groups = n_in, n_out, gs, n_groups
    return c


def _last_error():
    return ffi.string(lib.lm_last_error()).decode()


@pytest.mark.parametrize(
    "field,value,pattern",
    [
        ("n_in", 12, "n_in=12 must be a positive multiple of 8"),
        ("n_in", 0, "n_in=0 must be a positive multiple of 8"),
        ("n_out", 20, "n_out=20 must be a positive multiple of 8"),
        ("n_groups", 3, "n_groups=3 does not match"),
        ("qweight", None, "qweight pointer is NULL"),
        ("scales", None, "scales pointer is NULL"),
        ("qzeros", None, "qzeros pointer is NULL"),
    ],
)
def test_native_validation_codes_and_messages(field, value, pattern):
    keep = []
    c = _c_matrix(keep=keep)
    setattr(c, field, ffi.NULL if value is None else value)
    assert lib.lm_gptq_validate(c) in (lib.LM_ERR_SHAPE, lib.LM_ERR_ARG)
    assert pattern in _last_error()
    # the matmul entry point checks the same things and never touches memory
    x = np.zeros(64, np.float32)
    y = np.zeros(16, np.float32)
    scratch = np.zeros(1 << 16, np.uint8)
    rc = lib.lm_gptq_matmul_into(
        ffi.NULL,
        lib.LM_IMPL_AUTO,
        c,
        0,
        16,
        ffi.from_buffer("float[]", x),
        1,
        ffi.from_buffer("float[]", y),
        16,
        ffi.from_buffer(scratch),
    )
    assert rc < 0 and pattern in _last_error()
    assert (
        lib.lm_gptq_matmul(c, ffi.from_buffer("float[]", x), 1, ffi.from_buffer("float[]", y), lib.LM_IMPL_AUTO, 1) < 0
    )


def test_native_matmul_into_rejects_bad_requests():
    keep = []
    c = _c_matrix(keep=keep)
    assert lib.lm_gptq_validate(c) == lib.LM_OK
    x = np.zeros(64 * 2, np.float32)
    y = np.zeros(64, np.float32)
    scratch = np.zeros(lib.lm_gptq_scratch_bytes(c, 2), np.uint8)
    px, py, ps = ffi.from_buffer("float[]", x), ffi.from_buffer("float[]", y), ffi.from_buffer(scratch)
    call = lambda impl=lib.LM_IMPL_AUTO, o0=0, o1=16, xx=px, ncols=2, yy=py, ldy=16, s=ps: lib.lm_gptq_matmul_into(
        ffi.NULL, impl, c, o0, o1, xx, ncols, yy, ldy, s
    )
    assert call() == lib.LM_OK
    assert call(o1=17) == lib.LM_ERR_SHAPE and "output range [0, 17)" in _last_error()
    assert call(o0=-1) == lib.LM_ERR_SHAPE
    assert call(ldy=15) == lib.LM_ERR_SHAPE and "ldy=15" in _last_error()
    assert call(ncols=-1) == lib.LM_ERR_SHAPE
    assert call(xx=ffi.NULL) == lib.LM_ERR_ARG
    assert call(s=ffi.NULL) == lib.LM_ERR_ARG and "scratch" in _last_error()
    assert call(impl=99) == lib.LM_ERR_IMPL
    # a g_idx that went bad after validation is still caught, not followed
    g = np.zeros(64, np.int32)
    g[63] = 7
    c.g_idx = ffi.from_buffer("int32_t[]", g)
    assert call() == lib.LM_ERR_SHAPE and "g_idx[63]=7" in _last_error()
    assert lib.lm_gptq_validate(c) == lib.LM_ERR_SHAPE and "g_idx[63]=7" in _last_error()
    assert lib.lm_gptq_matmul(ffi.NULL, px, 1, py, lib.LM_IMPL_AUTO, 1) == lib.LM_ERR_ARG


def test_native_group_order_copy_is_checked():
    keep = []
    c = _c_matrix(keep=keep)
    qw = np.zeros((8, 16), np.int32)
    perm = np.arange(64, dtype=np.int32)[::-1].copy()
    keep += [qw, perm]
    c.perm_grouped = ffi.from_buffer("int32_t[]", perm)
    assert lib.lm_gptq_validate(c) == lib.LM_ERR_ARG and "qweight_grouped and perm_grouped" in _last_error()
    c.qweight_grouped = ffi.from_buffer("int32_t[]", qw)
    assert lib.lm_gptq_validate(c) == lib.LM_OK
    perm[5] = perm[6]
    assert lib.lm_gptq_validate(c) == lib.LM_ERR_SHAPE and "not a permutation" in _last_error()
    perm[5] = 64
    assert lib.lm_gptq_validate(c) == lib.LM_ERR_SHAPE and "perm_grouped[5]=64" in _last_error()
    x, y = np.zeros(64, np.float32), np.zeros(16, np.float32)
    scratch = np.zeros(lib.lm_gptq_scratch_bytes(c, 1), np.uint8)
    rc = lib.lm_gptq_matmul_into(
        ffi.NULL,
        lib.LM_IMPL_AUTO,
        c,
        0,
        16,
        ffi.from_buffer("float[]", x),
        1,
        ffi.from_buffer("float[]", y),
        16,
        ffi.from_buffer(scratch),
    )
    assert rc == lib.LM_ERR_SHAPE and "perm_grouped[5]=64" in _last_error()


def test_type_id_is_outside_ggml_ids():
    assert lib.LM_TYPE_GPTQ_INT4 == 1024
    assert not lib.lm_type_supported(lib.LM_TYPE_GPTQ_INT4)
