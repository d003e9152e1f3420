"""bench-kernels: throughput of the block-format kernels on this machine.

For each weight type: a mat-vec (decode: one activation column, weights far
larger than the caches) reported in GB/s of weights read, next to the
machine's measured read bandwidth — the physical limit of decode — and a
prefill-sized matmul in GFLOP/s. Medians over repetitions; machines are noisy.
gptq_int4 is a GPTQ INT4 linear (group size 128, f32 activations) run from its
packed form; gptq_int4_act the same with an act-order (permuted) g_idx.

    bin/bench-kernels [-t 2] [-r 5] [--types q4_0,q4_k] [--impl auto|scalar|avx2] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

from lamina import options
from lamina.cli.errors import checked, one_line_errors
from lamina.system import available_cpus

DEFAULT_TYPES = [
    "f32",
    "f16",
    "bf16",
    "q8_0",
    "q4_0",
    "q4_1",
    "q5_0",
    "q5_1",
    "q2_k",
    "q3_k",
    "q4_k",
    "q5_k",
    "q6_k",
    "iq1_s",
    "iq1_m",
    "iq2_xxs",
    "iq2_xs",
    "iq2_s",
    "iq3_xxs",
    "iq3_s",
    "iq4_nl",
    "iq4_xs",
    "tq1_0",
    "tq2_0",
    "mxfp4",
    "nvfp4",
    "gptq_int4",
    "gptq_int4_act",
]
GPTQ_TYPES = {"gptq_int4": False, "gptq_int4_act": True}  # name -> act-order g_idx
GPTQ_GROUP_SIZE = 128


def _median_seconds(fn, reps: int) -> float:
    fn()  # warm-up: page faults, caches, pool threads
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _random_weights(quants, qtype: str, rows: int, n: int, rng) -> np.ndarray:
    if not quants.can_quantize(qtype):
        # a type lamina runs but cannot write: random bytes (valid blocks of
        # the lattice i-quants, whose kernels do the same work for any values)
        return rng.integers(0, 256, (rows, quants.row_bytes(qtype, n)), dtype=np.uint8)
    # quantize a modest block of rows and tile it: the kernels' speed does not
    # depend on the values, and quantizing 64 MB of K-quants would dominate the run
    imatrix = np.ones(n, np.float32) if quants.needs_imatrix(qtype) else None  # IQ1_S, IQ2_XXS, IQ2_XS
    base = quants.quantize(rng.standard_normal((min(rows, 256), n)).astype(np.float32), qtype, imatrix=imatrix)
    reps = -(-rows // base.shape[0])
    return np.ascontiguousarray(np.tile(base, (reps, 1))[:rows])


def measure_bandwidth(n_threads: int, reps: int) -> float:
    from lamina.native import ffi, lib
    from lamina.quants import default_pool

    buf = np.ones(256 << 20, dtype=np.uint8)
    runs = [
        lib.lm_memory_read_gbps(default_pool(n_threads)._tp, ffi.from_buffer(buf), buf.size, 2) for _ in range(reps)
    ]
    return statistics.median(runs)


def _random_gptq(rows: int, n: int, act_order: bool, rng):
    """A GPTQ INT4 matrix W [rows, n] with random packed levels, zeros and scales."""
    from lamina.gptq.kernels import GPTQMatrix

    groups = n // GPTQ_GROUP_SIZE
    qweight = rng.integers(0, 1 << 32, (n // 8, rows), dtype=np.uint32).view(np.int32)
    qzeros = rng.integers(0, 1 << 32, (groups, rows // 8), dtype=np.uint32).view(np.int32)
    scales = (rng.random((groups, rows)) * 0.01).astype(np.float16)
    g_idx = rng.permutation(np.arange(n) // GPTQ_GROUP_SIZE).astype(np.int32) if act_order else None
    return GPTQMatrix(qweight, scales, qzeros, g_idx, GPTQ_GROUP_SIZE, name="bench")


def bench_gptq(name: str, n_threads: int, reps: int, impl: str, matvec_mb: int, rng) -> dict:
    """The same two measurements as bench_type for a GPTQ INT4 linear."""
    from lamina.quants import default_pool

    act_order = GPTQ_TYPES[name]
    n = 4096
    rows = max(256, (matvec_mb << 20) // (n // 2)) // 8 * 8
    w = _random_gptq(rows, n, act_order, rng)
    x1 = rng.standard_normal((1, n)).astype(np.float32)
    pool = default_pool(n_threads)
    t_mv = _median_seconds(lambda: w.matmul(x1, impl=impl, pool=pool), reps)

    p_rows, p_n, p_cols = 2048, 2048, 256
    wp = _random_gptq(p_rows, p_n, act_order, rng)
    xp = rng.standard_normal((p_cols, p_n)).astype(np.float32)
    t_mm = _median_seconds(lambda: wp.matmul(xp, impl=impl, pool=pool), max(1, reps // 2))
    return {
        "type": name,
        "bits_per_weight": 8.0 * w.nbytes / (rows * n),
        "matvec_rows": rows,
        "matvec_n": n,
        "matvec_bytes": int(w.nbytes),
        "matvec_ms": t_mv * 1e3,
        "matvec_gbps": w.nbytes / t_mv / 1e9,
        "matmul_shape": [p_rows, p_n, p_cols],
        "matmul_ms": t_mm * 1e3,
        "matmul_gflops": 2.0 * p_rows * p_n * p_cols / t_mm / 1e9,
    }


def bench_type(quants, qtype: str, n_threads: int, reps: int, impl: str, matvec_mb: int, rng) -> dict:
    n = 4096
    row_bytes = quants.row_bytes(qtype, n)
    rows = max(256, (matvec_mb << 20) // row_bytes)
    w = _random_weights(quants, qtype, rows, n, rng)
    x1 = rng.standard_normal((1, n)).astype(np.float32)
    pool = quants.default_pool(n_threads)
    t_mv = _median_seconds(lambda: quants.matmul(w, qtype, x1, impl=impl, pool=pool), reps)

    p_rows, p_n, p_cols = 2048, 2048, 256
    wp = _random_weights(quants, qtype, p_rows, p_n, rng)
    xp = rng.standard_normal((p_cols, p_n)).astype(np.float32)
    t_mm = _median_seconds(lambda: quants.matmul(wp, qtype, xp, impl=impl, pool=pool), max(1, reps // 2))
    return {
        "type": qtype,
        "bits_per_weight": 8.0 * row_bytes / n,
        "matvec_rows": rows,
        "matvec_n": n,
        "matvec_bytes": int(w.nbytes),
        "matvec_ms": t_mv * 1e3,
        "matvec_gbps": w.nbytes / t_mv / 1e9,
        "matmul_shape": [p_rows, p_n, p_cols],
        "matmul_ms": t_mm * 1e3,
        "matmul_gflops": 2.0 * p_rows * p_n * p_cols / t_mm / 1e9,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="lamina bench-kernels", description=__doc__.split("\n\n")[0])
    ap.add_argument("-t", "--threads", type=checked(options.n_threads), default=min(2, available_cpus()))
    ap.add_argument("-r", "--reps", type=int, default=5)
    ap.add_argument("--types", default=",".join(DEFAULT_TYPES), help="comma-separated ggml type names")
    ap.add_argument("--impl", default="auto", choices=["auto", "scalar", "avx2", "vnni"])
    ap.add_argument("--matvec-mb", type=int, default=64, help="weight bytes of the mat-vec matrix (MiB)")
    ap.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    args = ap.parse_args(argv)

    return _bench_kernels(args)


@one_line_errors("lamina bench-kernels")
def _bench_kernels(args: argparse.Namespace) -> int:
    from lamina import quants
    from lamina.native import lib

    rng = np.random.default_rng(0)
    types = [
        t.lower() if t.lower() in GPTQ_TYPES else quants.as_qtype(t).name.lower() for t in args.types.split(",") if t
    ]
    bw = measure_bandwidth(args.threads, args.reps)
    results = [
        bench_gptq(t, args.threads, args.reps, args.impl, args.matvec_mb, rng)
        if t in GPTQ_TYPES
        else bench_type(quants, t, args.threads, args.reps, args.impl, args.matvec_mb, rng)
        for t in types
    ]
    for r in results:
        r["matvec_pct_of_bandwidth"] = 100.0 * r["matvec_gbps"] / bw if bw else None
    meta = {
        "threads": args.threads,
        "impl": args.impl,
        "avx2": bool(lib.lm_cpu_has_avx2()),
        "vnni": ["none", "avx-vnni", "avx512-vnni"][lib.lm_cpu_has_vnni()],
        "read_bandwidth_gbps": bw,
    }
    if args.json:
        print(json.dumps({"machine": meta, "results": results}, indent=2))
        return 0

    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"lamina kernels — {args.threads} threads, impl={args.impl}, "
        f"memory read bandwidth {bw:.1f} GB/s (median of {args.reps})"
    )
    for col in ("type", "bpw", "mat-vec GB/s", "% of bandwidth", "mat-vec ms", "matmul GFLOP/s", "matmul ms"):
        table.add_column(col, justify="left" if col == "type" else "right")
    for r in results:
        table.add_row(
            r["type"],
            f"{r['bits_per_weight']:.2f}",
            f"{r['matvec_gbps']:.2f}",
            f"{r['matvec_pct_of_bandwidth']:.0f}%",
            f"{r['matvec_ms']:.2f}",
            f"{r['matmul_gflops']:.1f}",
            f"{r['matmul_ms']:.1f}",
        )
    # off a terminal rich would squeeze the table to 80 columns
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    print(
        f"mat-vec: {args.matvec_mb} MiB of weights x 1 column (n=4096); matmul: 2048x2048 weights x 256 columns",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
