"""The math the CUDA backend shares with the CPU, checked on the CPU.

native/quants/<type>.h says how a GPU warp splits each weight block's dot
product into parts (one lane each) and how one weight is dequantized (the
CPU rows and the GPU dequantizer both read it); native/gptq/gptq_math.h says
how one GPTQ INT4 weight is formed. Both are plain C with LM_HD, so nvcc
compiles them into the kernels and this test compiles the very same
functions for the host (cffi, the system compiler, -ffp-contract=off like
the core) and checks them against the core:

- the parts' integer sums of every block add up to the isum/imin (or idot)
  the scalar reference dots compute, bit for bit;
- summed in the CPU reference's order, the block terms give exactly the
  scalar vec_dot; summed in the order a warp sums them, within normalized
  MSE 1e-12 of it;
- one-weight-at-a-time dequantization equals the CPU dequantizer bit for bit;
- the activation quantizer pieces rebuild the CPU's Q8_0/Q8_1/Q8_K bytes;
- GPTQ weights equal runtime/gptq/pack.py's dequantize bit for bit.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from lamina import quants
from support.distributions import make, make_imatrix, nmse
from support.gptq_cases import random_gptq
from support.paths import REPO

ROOT = REPO
NATIVE = ROOT / "native"

# the lattice i-quants: their blocks are quantized with an importance matrix
# (which some require)
IQ_LATTICE = [T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ1_S, T.IQ1_M]

# weight type -> (block C type, partner C type, parts macro name, lmc_ function suffix)
QTYPES = {
    T.Q4_0: ("block_q4_0", "block_q8_0", "q4_0"),
    T.Q4_1: ("block_q4_1", "block_q8_1", "q4_1"),
    T.Q5_0: ("block_q5_0", "block_q8_0", "q5_0"),
    T.Q5_1: ("block_q5_1", "block_q8_1", "q5_1"),
    T.Q8_0: ("block_q8_0", "block_q8_0", "q8_0"),
    T.IQ4_NL: ("block_iq4_nl", "block_q8_0", "iq4_nl"),
    T.Q2_K: ("block_q2_K", "block_q8_K", "q2_K"),
    T.Q3_K: ("block_q3_K", "block_q8_K", "q3_K"),
    T.Q4_K: ("block_q4_K", "block_q8_K", "q4_K"),
    T.Q5_K: ("block_q5_K", "block_q8_K", "q5_K"),
    T.Q6_K: ("block_q6_K", "block_q8_K", "q6_K"),
    T.IQ4_XS: ("block_iq4_xs", "block_q8_K", "iq4_xs"),
    T.TQ1_0: ("block_tq1_0", "block_q8_K", "tq1_0"),
    T.TQ2_0: ("block_tq2_0", "block_q8_K", "tq2_0"),
    T.MXFP4: ("block_mxfp4", "block_q8_0", "mxfp4"),
    T.NVFP4: ("block_nvfp4", "block_q8_0", "nvfp4"),
    **{t: (f"block_{t.name.lower()}", "block_q8_K", t.name.lower()) for t in IQ_LATTICE},
}
# the types whose sub-blocks each make a float term (no integer reduction)
FLOAT_PARTS = {T.IQ4_XS, T.NVFP4}
# partner blocks per weight block (NVFP4: 64 weights, two Q8_0 blocks)
A_PER_W = {T.NVFP4: 2}
# the types whose reference dot sums block terms in the k-quants' lanes (kquant.h)
# (the lattice i-quants' reference multiplies the lanes' sum by a power of two,
# which their CUDA term applies per block: the same float either way)
KQUANTS = {T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.TQ1_0, T.TQ2_0, *IQ_LATTICE}
# the CPU reference's integer result of one block, through the shared header
REF_INTS = {
    T.Q4_0: "*is = lm_idot_q4_0_q8_0(x, y);",
    T.Q4_1: "*is = lm_idot_q4_1_q8_1(x, y);",
    T.Q5_0: "*is = lm_idot_q5_0_q8_0(x, y);",
    T.Q5_1: "*is = lm_idot_q5_1_q8_1(x, y);",
    T.Q8_0: "*is = lm_idot_q8_0_q8_0(x, y);",
    T.IQ4_NL: "*is = lm_idot_iq4_nl_q8_0(x, y);",
    T.Q2_K: "lm_kdot_q2_K(x, y, is, im);",
    T.Q3_K: "*is = lm_kdot_q3_K(x, y);",
    T.Q4_K: "lm_kdot_q4_K(x, y, is, im);",
    T.Q5_K: "lm_kdot_q5_K(x, y, is, im);",
    T.Q6_K: "*is = lm_kdot_q6_K(x, y);",
    T.IQ4_XS: "for (int ib = 0; ib < QK_K / 32; ib++) *is += lm_idot_iq4_xs_sub_q8_K(x, y, ib);",
    T.TQ1_0: "*is = lm_kdot_tq1_0(x, y);",
    T.TQ2_0: "*is = lm_kdot_tq2_0(x, y);",
    T.MXFP4: "*is = lm_idot_mxfp4_q8_0(x, y);",
    T.NVFP4: "for (int sb = 0; sb < 4; sb++) *is += lm_idot_nvfp4_sub_q8_0(x, y, sb);",
    **{t: f"*is = lm_kdot_{t.name.lower()}(x, y);" for t in IQ_LATTICE},
}

N = 2304  # 9 super-blocks, 72 legacy blocks: neither fills whole warp passes
DISTS = ["normal", "heavy_tails", "outliers", "all_zero", "sparse", "positive", "weights_like", "large"]
ROWS = 4

CDEF = """
int hx_parts(int type);
int hx_int_reduce(int type);
void hx_block_ints(int type, const void *x, const void *y, int64_t nb, int32_t *is_parts, int32_t *im_parts,
                   int32_t *is_ref, int32_t *im_ref);
float hx_dot_cpu_order(int type, const void *x, const void *y, int64_t nb);
float hx_dot_warp_order(int type, const void *x, const void *y, int64_t nb);
void hx_dequant(int type, const void *x, int64_t nb, float *out);
void hx_quantize(int partner, const float *x, int64_t n, void *out);
void hx_gptq_dequant(const int32_t *qweight, const uint16_t *scales, const int32_t *qzeros, const int32_t *g_idx,
                     int64_t n_in, int64_t n_out, int32_t group_size, float *out);
void hx_gptq_matvec_order(const int32_t *qweight, const uint16_t *scales, const int32_t *qzeros,
                          const int32_t *g_idx, int64_t n_in, int64_t n_out, int32_t group_size, const float *x,
                          float *y);
"""


def _harness_source() -> str:
    cases = {name: [] for name in ("parts", "red", "ints", "cpu", "warp", "deq")}
    for qt, (W, A, t) in QTYPES.items():
        id_ = int(qt)
        ap = A_PER_W.get(qt, 1)
        parts = f"LMC_PARTS_{t.upper()}"
        red = f"LMC_INT_REDUCE_{t.upper()}" if qt in FLOAT_PARTS else "1"
        cases["parts"].append(f"case {id_}: return {parts};")
        cases["red"].append(f"case {id_}: return {red};")
        cases["ints"].append(f"""case {id_}: {{
            const {W} *xb = vx; const {A} *yb = vy;
            for (int64_t b = 0; b < nb; b++) {{
                int32_t s = 0, m = 0;
                for (int p = 0; p < {parts}; p++) {{
                    int32_t a = 0, c = 0;
                    lmc_ints_{t}(&xb[b], &yb[b * {ap}], p, &a, &c);
                    s += a; m += c;
                }}
                is_parts[b] = s; im_parts[b] = m;
                const {W} *x = &xb[b]; const {A} *y = &yb[b * {ap}];
                int32_t *is = &is_ref[b], *im = &im_ref[b];
                *is = 0; *im = 0;
                {REF_INTS[qt]}
            }}
            break; }}""")
        # the reference's order: blocks in order, or the 8 k-quant lanes
        if qt in KQUANTS:
            cpu = f"""float lanes[LM_KDOT_LANES] = {{0}};
                for (int64_t b = 0; b < nb; b++) {{
                    int32_t s = 0, m = 0;
                    for (int p = 0; p < {parts}; p++) {{ int32_t a, c; lmc_ints_{t}(&xb[b], &yb[b * {ap}], p, &a, &c); s += a; m += c; }}
                    lanes[b % LM_KDOT_LANES] += lmc_term_{t}(&xb[b], &yb[b * {ap}], 0, s, m);
                }}
                return lm_kdot_sum_lanes(lanes);"""
        elif qt in FLOAT_PARTS:
            cpu = f"""float sum = 0;
                for (int64_t b = 0; b < nb; b++)
                    for (int p = 0; p < {parts}; p++) {{ int32_t a, c; lmc_ints_{t}(&xb[b], &yb[b * {ap}], p, &a, &c);
                        sum += lmc_term_{t}(&xb[b], &yb[b * {ap}], p, a, c); }}
                return sum;"""
        else:
            cpu = f"""float sum = 0;
                for (int64_t b = 0; b < nb; b++) {{ int32_t a, c; lmc_ints_{t}(&xb[b], &yb[b * {ap}], 0, &a, &c);
                    sum += lmc_term_{t}(&xb[b], &yb[b * {ap}], 0, a, c); }}
                return sum;"""
        cases["cpu"].append(f"case {id_}: {{ const {W} *xb = vx; const {A} *yb = vy; {cpu} }}")
        # the order of mmvq_kernel in matmul.cu: lane l takes part l % P of
        # block b0 + l / P; integer parts are summed across the P lanes (exact),
        # lane part 0 adds the term; then the warp's xor-butterfly
        cases["warp"].append(f"""case {id_}: {{
            const {W} *xb = vx; const {A} *yb = vy;
            const int P = {parts}, G = 32 / {parts}, R = {red};
            float lane[32] = {{0}};
            for (int64_t b0 = 0; b0 < nb; b0 += G)
                for (int l = 0; l < 32; l++) {{
                    const int64_t b = b0 + l / P;
                    const int part = l % P;
                    if (b >= nb) continue;
                    if (R) {{
                        if (part != 0) continue;
                        int32_t s = 0, m = 0;
                        for (int p = 0; p < P; p++) {{ int32_t a, c; lmc_ints_{t}(&xb[b], &yb[b * {ap}], p, &a, &c); s += a; m += c; }}
                        lane[l] += lmc_term_{t}(&xb[b], &yb[b * {ap}], part, s, m);
                    }} else {{
                        int32_t a, c;
                        lmc_ints_{t}(&xb[b], &yb[b * {ap}], part, &a, &c);
                        lane[l] += lmc_term_{t}(&xb[b], &yb[b * {ap}], part, a, c);
                    }}
                }}
            return butterfly(lane); }}""")
        qk = "QK_NVFP4" if qt == T.NVFP4 else "QK_K" if qt in KQUANTS or qt == T.IQ4_XS else "32"
        cases["deq"].append(f"""case {id_}: {{ const {W} *xb = vx;
            for (int64_t b = 0; b < nb; b++) for (int i = 0; i < {qk}; i++) out[b * {qk} + i] = lm_dequant1_{t}(&xb[b], i);
            break; }}""")
    j = "\n        ".join
    return f"""
#include <string.h>
#include "quants/types.h"
#include "gptq/gptq_math.h"

static float butterfly(float *v) {{
    for (int off = 16; off > 0; off >>= 1) {{
        float t[32];
        for (int l = 0; l < 32; l++) t[l] = v[l] + v[l ^ off];
        memcpy(v, t, sizeof t);
    }}
    return v[0];
}}

int hx_parts(int type) {{ switch (type) {{ {j(cases["parts"])} default: return -1; }} }}
int hx_int_reduce(int type) {{ switch (type) {{ {j(cases["red"])} default: return -1; }} }}

void hx_block_ints(int type, const void *vx, const void *vy, int64_t nb, int32_t *is_parts, int32_t *im_parts,
                   int32_t *is_ref, int32_t *im_ref) {{
    switch (type) {{ {j(cases["ints"])} default: break; }}
}}

float hx_dot_cpu_order(int type, const void *vx, const void *vy, int64_t nb) {{
    switch (type) {{ {j(cases["cpu"])} default: return 0; }}
}}

float hx_dot_warp_order(int type, const void *vx, const void *vy, int64_t nb) {{
    switch (type) {{ {j(cases["warp"])} default: return 0; }}
}}

void hx_dequant(int type, const void *vx, int64_t nb, float *out) {{
    switch (type) {{ {j(cases["deq"])} default: break; }}
}}

/* the GPU quantizers' per-value pieces, with their exact reductions done in order */
void hx_quantize(int partner, const float *x, int64_t n, void *vout) {{
    if (partner == LM_TYPE_Q8_0 || partner == LM_TYPE_Q8_1) {{
        for (int64_t b = 0; b < n / 32; b++) {{
            const float *xb = x + 32 * b;
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(xb[j]));
            const float d = lm_q8_act_scale(amax), id = lm_q8_act_inv(amax);
            int sum = 0;
            int8_t *qs;
            if (partner == LM_TYPE_Q8_0) {{
                block_q8_0 *o = (block_q8_0 *)vout + b;
                o->d = lm_f32_to_half(d);
                qs = o->qs;
            }} else {{
                block_q8_1 *o = (block_q8_1 *)vout + b;
                o->d = lm_f32_to_half(d);
                qs = o->qs;
            }}
            for (int j = 0; j < 32; j++) {{ qs[j] = lm_q8_act_quant(xb[j], id); sum += qs[j]; }}
            if (partner == LM_TYPE_Q8_1) ((block_q8_1 *)vout + b)->s = lm_q8_1_s(sum, d);
        }}
        return;
    }}
    for (int64_t b = 0; b < n / QK_K; b++) {{
        const float *xb = x + QK_K * b;
        block_q8_K *o = (block_q8_K *)vout + b;
        float amax = 0, max = 0;
        for (int j = 0; j < QK_K; j++) if (fabsf(xb[j]) > amax) {{ amax = fabsf(xb[j]); max = xb[j]; }}
        if (!amax) {{ memset(o, 0, sizeof *o); continue; }}
        const float iscale = lm_q8_K_iscale(max);
        for (int j = 0; j < QK_K; j++) o->qs[j] = lm_q8_K_quant(xb[j], iscale);
        for (int g = 0; g < QK_K / 16; g++) {{
            int s = 0;
            for (int l = 0; l < 16; l++) s += o->qs[16 * g + l];
            o->bsums[g] = (int16_t)s;
        }}
        o->d = lm_q8_K_d(iscale);
    }}
}}

void hx_gptq_dequant(const int32_t *qweight, const uint16_t *scales, const int32_t *qzeros, const int32_t *g_idx,
                     int64_t n_in, int64_t n_out, int32_t group_size, float *out) {{
    const int64_t gs = lm_gptq_eff_group_size(group_size, (int32_t)n_in);
    for (int64_t o = 0; o < n_out; o++)
        for (int64_t i = 0; i < n_in; i++)
            out[o * n_in + i] = lm_gptq_dequant_one(qweight, scales, qzeros, g_idx, n_out, gs, o, i);
}}

/* gptq_mv_kernel's order: 8 slices of word rows summed in order, then the slices */
void hx_gptq_matvec_order(const int32_t *qweight, const uint16_t *scales, const int32_t *qzeros,
                          const int32_t *g_idx, int64_t n_in, int64_t n_out, int32_t group_size, const float *x,
                          float *y) {{
    const int64_t gs = lm_gptq_eff_group_size(group_size, (int32_t)n_in), n_rows = n_in / 8;
    for (int64_t o = 0; o < n_out; o++) {{
        float slice[8];
        for (int s = 0; s < 8; s++) {{
            float acc = 0;
            for (int64_t r = n_rows * s / 8; r < n_rows * (s + 1) / 8; r++)
                for (int j = 0; j < 8; j++) {{
                    const int64_t i = 8 * r + j;
                    const int64_t g = lm_gptq_group_of(g_idx, gs, i);
                    const float w = lm_gptq_weight(lm_half_to_f32(scales[g * n_out + o]),
                                                   lm_gptq_nibble((uint32_t)qweight[r * n_out + o], j),
                                                   lm_gptq_zero(qzeros, n_out, g, o));
                    acc += w * x[i];
                }}
            slice[s] = acc;
        }}
        float sum = 0;
        for (int s = 0; s < 8; s++) sum += slice[s];
        y[o] = sum;
    }}
}}
"""


FLAGS = ["-std=gnu11", "-O2", "-ffp-contract=off", "-fno-strict-aliasing"]


@pytest.fixture(scope="module")
def hx(tmp_path_factory):
    cffi = pytest.importorskip("cffi")
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler to build the host harness")
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    ffi.set_source(
        "_lmc_shared_hx",
        _harness_source(),
        include_dirs=[str(NATIVE)],
        extra_compile_args=FLAGS,
        libraries=["m"],
    )
    tmp = tmp_path_factory.mktemp("hx")
    path = ffi.compile(tmpdir=str(tmp))
    spec = importlib.util.spec_from_file_location("_lmc_shared_hx", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shared_headers_compile_as_strict_c(tmp_path):
    """The headers nvcc compiles are also warning-free C11 for the host."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    src = tmp_path / "h.c"
    src.write_text('#include "quants/types.h"\n#include "gptq/gptq_math.h"\nint main(void) { return 0; }\n')
    r = subprocess.run(
        [
            cc,
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-ffp-contract=off",
            f"-I{NATIVE}",
            "-c",
            str(src),
            "-o",
            str(tmp_path / "h.o"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr


def _case(qt, dist, seed=0):
    w = make(dist, ROWS, N, seed)
    x = make("normal" if dist in ("all_zero",) else dist, ROWS, N, seed + 1)
    wq = quants.quantize(w, qt, imatrix=make_imatrix(N, seed) if qt in IQ_LATTICE else None)
    xq = np.stack([quants.quantize_activations(x[r], qt) for r in range(ROWS)])
    return wq, xq, x


def _ptr(hx, a):
    return hx.ffi.from_buffer(a)


@pytest.mark.parametrize("qt", list(QTYPES), ids=lambda q: q.name)
def test_parts_sum_to_the_reference_integers(hx, qt):
    nb = N // quants.block_size(qt)
    assert hx.lib.hx_parts(int(qt)) * (32 // hx.lib.hx_parts(int(qt))) == 32  # lanes tile a warp
    for dist in DISTS:
        wq, xq, _ = _case(qt, dist)
        for r in range(ROWS):
            out = [np.zeros(nb, np.int32) for _ in range(4)]
            hx.lib.hx_block_ints(
                int(qt), _ptr(hx, wq[r]), _ptr(hx, xq[r]), nb, *[hx.ffi.from_buffer("int32_t[]", o) for o in out]
            )
            np.testing.assert_array_equal(out[0], out[2], err_msg=f"{qt.name} {dist} row {r}: isum")
            np.testing.assert_array_equal(out[1], out[3], err_msg=f"{qt.name} {dist} row {r}: imin")


def _levels_legacy(qt, wq_row):
    """integer levels of a legacy symmetric row, from gguf-py's dequantizer:
    value / d is exact for these formats (level * fp16 d fits in a float)"""
    from gguf.quants import dequantize as gguf_dequantize

    blk = quants.block_bytes(qt)
    blocks = wq_row.reshape(-1, blk)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    vals = gguf_dequantize(wq_row, qt).reshape(-1, 32).astype(np.float32)
    safe = np.where(d == 0, 1, d)
    return np.where(d == 0, 0, np.rint(vals / safe)).astype(np.int64)


@pytest.mark.parametrize("qt", [T.Q4_0, T.Q5_0, T.Q8_0, T.IQ4_NL], ids=lambda q: q.name)
def test_legacy_integer_dots_against_an_independent_oracle(hx, qt):
    """isum of the symmetric legacy types from levels unpacked by gguf-py"""
    nb = N // 32
    for dist in ("normal", "outliers", "weights_like"):
        wq, xq, _ = _case(qt, dist)
        for r in range(ROWS):
            levels = _levels_legacy(qt, wq[r])
            a = xq[r].reshape(nb, 34)[:, 2:].copy().view(np.int8).astype(np.int64)
            want = (levels * a).sum(axis=1)
            got = [np.zeros(nb, np.int32) for _ in range(4)]
            hx.lib.hx_block_ints(
                int(qt), _ptr(hx, wq[r]), _ptr(hx, xq[r]), nb, *[hx.ffi.from_buffer("int32_t[]", o) for o in got]
            )
            np.testing.assert_array_equal(got[0], want)


def _scale_and_activations(qt, wq_row, xq_row):
    """per block and weight: the float scale of the weights (TQ: the f16 d,
    MXFP4: 2^(e-128), NVFP4: its sub-block's UE4M3 scale / 2, decoded here by
    its definition), and the int8 activations (Q8_K or Q8_0 qs), read straight
    from the bytes"""
    qk = quants.block_size(qt)
    blocks = wq_row.reshape(-1, quants.block_bytes(qt))
    if qt == T.MXFP4:
        scale = np.ldexp(1.0, blocks[:, 0].astype(np.int64) - 128)[:, None]
        a = xq_row.reshape(-1, 34)[:, 2:]
    elif qt == T.NVFP4:
        u = blocks[:, :4].astype(np.int64)
        e, m = (u >> 3) & 0xF, u & 7
        ue4m3 = np.where(e == 0, np.ldexp(m.astype(np.float64), -9), np.ldexp(1 + m / 8, e - 7))
        scale = np.repeat(np.where(u == 0x7F, 0, ue4m3 / 2), 16, axis=1)
        a = xq_row.reshape(-1, 34)[:, 2:]
    else:
        scale = blocks[:, -2:].copy().view(np.float16).astype(np.float64).ravel()[:, None]
        a = xq_row.reshape(-1, 292)[:, 4:260]
    return scale, a.copy().view(np.int8).astype(np.int64).reshape(-1, qk)


@pytest.mark.parametrize("qt", [T.TQ1_0, T.TQ2_0, T.MXFP4, T.NVFP4], ids=lambda q: q.name)
def test_ternary_and_fp4_integer_dots_against_gguf_levels(hx, qt):
    """isum from the levels gguf-py's dequantizer unpacks (value / scale is
    exact: trits - 1, or doubled E2M1 values), not from the shared header"""
    from gguf.quants import dequantize as gguf_dequantize

    qk = quants.block_size(qt)
    nb = N // qk
    for dist in ("normal", "outliers", "weights_like", "sparse"):
        wq, xq, _ = _case(qt, dist)
        for r in range(ROWS):
            scale, a = _scale_and_activations(qt, wq[r], xq[r])
            vals = gguf_dequantize(wq[r], qt).reshape(nb, qk).astype(np.float64)
            safe = np.where(scale == 0, 1, scale)
            levels = np.where(scale == 0, 0, np.rint(vals / safe)).astype(np.int64)
            assert np.array_equal(levels * safe, np.where(scale == 0, 0, vals)), f"{qt.name}: not exact"
            got = [np.zeros(nb, np.int32) for _ in range(4)]
            hx.lib.hx_block_ints(
                int(qt), _ptr(hx, wq[r]), _ptr(hx, xq[r]), nb, *[hx.ffi.from_buffer("int32_t[]", o) for o in got]
            )
            np.testing.assert_array_equal(got[2], (levels * a).sum(axis=1), err_msg=f"{qt.name} {dist} row {r}")


@pytest.mark.parametrize("qt", list(QTYPES), ids=lambda q: q.name)
def test_float_dot_matches_the_scalar_vec_dot(hx, qt):
    nb = N // quants.block_size(qt)
    for dist in DISTS:
        wq, xq, _ = _case(qt, dist)
        cpu_order, warp_order, ref = [], [], []
        for r in range(ROWS):
            ref.append(quants.vec_dot(wq[r], qt, xq[r], impl="scalar"))
            cpu_order.append(hx.lib.hx_dot_cpu_order(int(qt), _ptr(hx, wq[r]), _ptr(hx, xq[r]), nb))
            warp_order.append(hx.lib.hx_dot_warp_order(int(qt), _ptr(hx, wq[r]), _ptr(hx, xq[r]), nb))
        ref = np.array(ref, np.float32)
        # same terms, same order: the same float
        np.testing.assert_array_equal(np.array(cpu_order, np.float32), ref, err_msg=f"{qt.name} {dist}")
        # (Q8_1's f16 s overflows for activations ~1e4: the CPU's dot is then
        # inf or NaN too, and must be so in the warp's order as well)
        warp_order = np.array(warp_order, np.float32)
        finite = np.isfinite(ref)
        np.testing.assert_array_equal(np.isfinite(warp_order), finite)
        err = nmse(warp_order[finite], ref[finite])
        assert err <= 1e-12, f"{qt.name} {dist}: warp-order dot nmse {err:.3g}"


@pytest.mark.parametrize("qt", list(QTYPES), ids=lambda q: q.name)
def test_one_weight_dequant_is_the_cpu_dequantizer(hx, qt):
    nb = N // quants.block_size(qt)
    for dist in DISTS:
        wq, _, _ = _case(qt, dist)
        want = quants.dequantize(wq, qt)
        for r in range(ROWS):
            got = np.empty(N, np.float32)
            hx.lib.hx_dequant(int(qt), _ptr(hx, wq[r]), nb, hx.ffi.from_buffer("float[]", got))
            np.testing.assert_array_equal(
                got.view(np.uint32), want[r].view(np.uint32), err_msg=f"{qt.name} {dist} row {r}"
            )


@pytest.mark.parametrize("qt", [T.Q4_0, T.Q4_1, T.Q2_K], ids=lambda q: q.name)  # Q8_0, Q8_1, Q8_K
@pytest.mark.parametrize("dist", DISTS + ["tiny", "constant", "bf16_rounded"])
def test_activation_quantizer_pieces_rebuild_the_cpu_bytes(hx, qt, dist):
    partner = quants.vec_dot_type(qt)
    x = make(dist, ROWS, N, 7)
    for r in range(ROWS):
        want = quants.quantize_activations(x[r], qt)
        got = np.zeros_like(want)
        hx.lib.hx_quantize(int(partner), hx.ffi.from_buffer("float[]", x[r]), N, _ptr(hx, got))
        np.testing.assert_array_equal(got, want, err_msg=f"{partner.name} {dist} row {r}")


# ------------------------------------------------------------------ GPTQ


@pytest.mark.parametrize(
    "n_in,n_out,group_size,act_order",
    [
        (256, 64, 128, False),
        (512, 40, 32, False),
        (384, 24, -1, False),
        (256, 32, 64, True),
        (200, 16, 40, True),
    ],
)
def test_gptq_weight_is_gptq_pack_dequantize(hx, n_in, n_out, group_size, act_order):
    rng = np.random.default_rng([n_in, n_out, group_size + 1, int(act_order)])
    packed, g_idx, _, _ = random_gptq(rng, n_in, n_out, group_size, act_order)
    want = packed.dequantize()  # f32 [out, in]
    ffi = hx.ffi
    qweight = np.ascontiguousarray(packed.qweight, np.int32)
    qzeros = np.ascontiguousarray(packed.qzeros, np.int32)
    scales = np.ascontiguousarray(packed.scales).view(np.uint16)
    gi = np.ascontiguousarray(g_idx, np.int32)
    # with g_idx, and (when it is the plain i / group_size) without it
    variants = [gi] + ([None] if not act_order else [])
    for g in variants:
        got = np.empty((n_out, n_in), np.float32)
        hx.lib.hx_gptq_dequant(
            ffi.from_buffer("int32_t[]", qweight),
            ffi.from_buffer("uint16_t[]", scales),
            ffi.from_buffer("int32_t[]", qzeros),
            ffi.NULL if g is None else ffi.from_buffer("int32_t[]", g),
            n_in,
            n_out,
            group_size,
            ffi.from_buffer("float[]", got),
        )
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
        x = rng.standard_normal(n_in).astype(np.float32)
        y = np.empty(n_out, np.float32)
        hx.lib.hx_gptq_matvec_order(
            ffi.from_buffer("int32_t[]", qweight),
            ffi.from_buffer("uint16_t[]", scales),
            ffi.from_buffer("int32_t[]", qzeros),
            ffi.NULL if g is None else ffi.from_buffer("int32_t[]", g),
            n_in,
            n_out,
            group_size,
            ffi.from_buffer("float[]", x),
            ffi.from_buffer("float[]", y),
        )
        ref = want.astype(np.float64) @ x.astype(np.float64)
        assert nmse(y, ref) <= 1e-12
