"""The AVX-VNNI builds of the 32-weight formats' kernels (native/simd/x86/avx2.h,
LM_VNNI: vpdpbusd in place of vpmaddubsw + vpmaddwd) must give the AVX2
kernels' bits: lamina picks them at run time on CPUs that have AVX-VNNI, and
a logit must not depend on which CPU computed it.

Every path of matmul is covered: one column (one and two rows at a time), two
to four columns (the few-column kernel), up to eight in pairs (two rows by two
columns), and more; weights from the quantizers and raw random bytes (every
byte value, q8_0's -128 included: the bound that keeps vpmaddubsw from
saturating, and so both paths equal, is 2 * 128 * 127 < 32767).
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from lamina import quants
from lamina.native import lib
from support.distributions import make

pytestmark = pytest.mark.skipif(not lib.lm_cpu_has_vnni(), reason="CPU lacks AVX-VNNI: its kernels cannot run")

TYPES = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.IQ4_NL, T.MXFP4]
# the Q8_K formats whose many-column (prefill) kernel has VNNI builds
XN_KQUANTS = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_XS]
N = 544  # 17 blocks
ROWS = 19  # odd: the two-row kernels leave one row over
NCOLS = [1, 2, 3, 4, 5, 6, 8, 9, 17]


def random_bytes_weights(qtype, rng):
    """raw random blocks with finite, moderate scales (d, and m where the type has one)"""
    w = rng.integers(0, 256, size=(ROWS, quants.row_bytes(qtype, N)), dtype=np.uint8)
    blocks = w.reshape(ROWS, -1, quants.block_bytes(qtype))
    if qtype == T.MXFP4:  # the E8M0 exponent byte leads the block
        blocks[:, :, 0] = rng.integers(118, 138, size=blocks.shape[:2])
        return w
    n_halves = 2 if qtype in (T.Q4_1, T.Q5_1) else 1  # d (and m) lead the block
    scales = rng.uniform(-0.05, 0.05, size=blocks.shape[:2] + (n_halves,)).astype(np.float16)
    blocks[:, :, : 2 * n_halves] = scales.view(np.uint8).reshape(blocks.shape[:2] + (2 * n_halves,))
    return w


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("ncols", NCOLS)
@pytest.mark.parametrize("source", ["normal", "outliers", "heavy_tails", "random_bytes"])
@pytest.mark.parametrize("qtype", TYPES, ids=[t.name for t in TYPES])
def test_vnni_matmul_equals_avx2(qtype, source, ncols, threads):
    rng = np.random.default_rng([int(qtype), ncols])
    if source == "random_bytes":
        w = random_bytes_weights(qtype, rng)
        x = make("outliers", ncols, N, seed=3)  # activation bytes at +-127
    else:
        w = quants.quantize(make(source, ROWS, N, seed=1), qtype)
        x = make(source, ncols, N, seed=2)
    vnni = quants.matmul(w, qtype, x, n_threads=threads, impl="vnni")
    avx2 = quants.matmul(w, qtype, x, n_threads=threads, impl="avx2")
    assert np.isfinite(avx2).all()
    np.testing.assert_array_equal(vnni, avx2)
    # and what a model runs (auto) is the AVX-VNNI path here
    np.testing.assert_array_equal(quants.matmul(w, qtype, x, n_threads=threads), vnni)


@pytest.mark.parametrize("qtype", TYPES, ids=[t.name for t in TYPES])
def test_vnni_vec_dot_equals_avx2(qtype):
    rng = np.random.default_rng(int(qtype))
    w = random_bytes_weights(qtype, rng)
    act = quants.quantize_activations(make("outliers", 1, N, seed=4), qtype)
    for r in range(ROWS):
        assert quants.vec_dot(w[r], qtype, act, impl="vnni") == quants.vec_dot(w[r], qtype, act, impl="avx2")


def test_avx512_vnni_build_equals_avx2():
    """The EVEX-encoded build (CPUs with AVX512-VNNI but no AVX-VNNI: Ice Lake,
    Zen 4), forced by LAMINA_SIMD=avx512vnni in a child process (the choice is
    made once per process); 17 columns take the many-column kernels, the
    Q8_K formats' included."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if " avx512_vnni" not in flags or " avx512vl" not in flags:
        pytest.skip("CPU lacks AVX512-VNNI/VL: its build cannot run")
    code = f"""
import numpy as np
from lamina import quants
from lamina.native import lib
from support.distributions import make
assert lib.lm_cpu_has_vnni() == 2, lib.lm_cpu_has_vnni()
for qtype, n in {[(int(t), N) for t in TYPES] + [(int(t), 2560) for t in XN_KQUANTS]}:
    for ncols in (1, 2, 4, 7, 17):
        w = quants.quantize(make("outliers", {ROWS}, n, seed=1), qtype)
        x = make("outliers", ncols, n, seed=2)
        a = quants.matmul(w, qtype, x, n_threads=2, impl="vnni")
        b = quants.matmul(w, qtype, x, n_threads=2, impl="avx2")
        assert np.array_equal(a, b), (qtype, ncols)
print("ok")
"""
    env = dict(os.environ, LAMINA_SIMD="avx512vnni")
    tests_dir = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (tests_dir, env.get("PYTHONPATH", "")) if p)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
