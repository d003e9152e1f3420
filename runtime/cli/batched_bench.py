"""lamina batched-bench: llama-batched-bench's measurement on lamina's
engine, with its flags and its table, and with --llama-cpp the real
llama-batched-bench (tools/build_llama_cpp.sh builds it) on the same model,
sizes and threads in the same run.

    lamina batched-bench -m MODEL [-c 2048] [-b 512] -npp 128 -ntg 128 -npl 1,2,4,8 [-pps] [-t 2] [-r 3]

For each (PP, TG, B): B sequences of PP random prompt tokens are evaluated
(T_PP; one shared prompt copied to all B with -pps), then TG steps decode one
token of every sequence in one forward pass (T_TG). S_PP = B*PP / T_PP,
S_TG = B*TG / T_TG, S = all tokens / (T_PP + T_TG), N_KV the cells used.
With -r N each row is the median of N runs (llama-batched-bench runs once)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lamina import options
from lamina.cli.errors import checked, one_line_errors
from lamina.system import available_cpus


@dataclass
class Row:
    engine: str
    pp: int
    tg: int
    pl: int
    n_kv: int
    t_pp: float
    t_tg: float
    shared: bool

    @property
    def speed_pp(self) -> float:
        return (self.pp if self.shared else self.pl * self.pp) / self.t_pp if self.t_pp else 0.0

    @property
    def speed_tg(self) -> float:
        return self.pl * self.tg / self.t_tg if self.t_tg else 0.0

    @property
    def t(self) -> float:
        return self.t_pp + self.t_tg

    @property
    def speed(self) -> float:
        return ((self.pp if self.shared else self.pl * self.pp) + self.pl * self.tg) / self.t


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lamina batched-bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", default=None, help="GGUF path or known model name (default model if none)")
    ap.add_argument("-c", "--ctx-size", type=checked(options.n_ctx), default=2048, help="KV cells in all (n_kv_max)")
    ap.add_argument("-b", "--batch-size", type=checked(options.n_batch), default=512, help="tokens per forward pass")
    ap.add_argument("-npp", type=_ints, default=[128], help="prompt tokens per sequence, comma-separated")
    ap.add_argument("-ntg", type=_ints, default=[128], help="generated tokens per sequence, comma-separated")
    ap.add_argument("-npl", type=_ints, default=[1, 2, 4, 8], help="parallel sequences, comma-separated")
    ap.add_argument("-pps", action="store_true", help="one prompt shared by all sequences (copied, not recomputed)")
    ap.add_argument("-t", "--threads", type=checked(options.n_threads), default=available_cpus())
    ap.add_argument("-r", "--repetitions", type=int, default=1, help="runs per row; the median is shown")
    ap.add_argument("--json", action="store_true", help="one JSON object per row (llama-batched-bench's jsonl)")
    ap.add_argument("--llama-cpp", action="store_true", help="also run llama.cpp's llama-batched-bench")
    return ap


def main(argv: list[str] | None = None) -> int:
    return _bench(parser().parse_args(argv))


@one_line_errors("lamina batched-bench")
def _bench(args: argparse.Namespace) -> int:
    from lamina.model_cache import resolve_model

    if args.repetitions < 1:
        raise ValueError("-r must be >= 1")
    path = str(resolve_model(args.model))
    rows = lamina_rows(path, args)
    if args.llama_cpp:
        rows += llama_cpp_rows(path, args)
    if args.json:
        for r in rows:
            print(json.dumps(_record(r, args)))
    else:
        print_table(rows, args)
    return 0


def _cases(args: argparse.Namespace):
    for pp in args.npp:
        for tg in args.ntg:
            for pl in args.npl:
                n_kv = (pp if args.pps else pl * pp) + pl * tg
                if n_kv <= args.ctx_size:  # as llama-batched-bench: rows that do not fit are skipped
                    yield pp, tg, pl, n_kv


def lamina_rows(path: str, args: argparse.Namespace) -> list[Row]:
    from lamina.engine.context import Context, Model

    model = Model.load(path, n_threads=args.threads)
    n_seq = max(args.npl)
    ctx = Context(model, n_ctx=args.ctx_size, n_batch=args.batch_size, n_seq_max=n_seq, n_ctx_seq=args.ctx_size)
    rng = np.random.default_rng(0)
    V = model.n_vocab
    _decode(ctx, rng.integers(0, V, 16), np.arange(16), np.zeros(16, np.int32))  # warm up, as llama.cpp does
    rows = []
    for pp, tg, pl, n_kv in _cases(args):
        runs = [_run_case(ctx, rng, V, pp, tg, pl, args.pps) for _ in range(args.repetitions)]
        t_pp = statistics.median(r[0] for r in runs)
        t_tg = statistics.median(r[1] for r in runs)
        rows.append(Row("lamina", pp, tg, pl, n_kv, t_pp, t_tg, args.pps))
    ctx.close()
    model.close()
    return rows


def _decode(ctx, tokens, pos, seq, want_last_of_each: bool = True) -> None:
    """Evaluate a batch in n_batch pieces; logits only for each sequence's last token."""
    tokens, pos, seq = (np.asarray(a, np.int32) for a in (tokens, pos, seq))
    last = np.zeros(len(tokens), np.bool_)
    if want_last_of_each:
        for s in np.unique(seq):
            last[np.flatnonzero(seq == s)[-1]] = True
    for i in range(0, len(tokens), ctx.n_batch):
        sl = slice(i, i + ctx.n_batch)
        ctx.decode(tokens[sl], pos[sl], seq[sl], last[sl])


def _run_case(ctx, rng, V: int, pp: int, tg: int, pl: int, shared: bool) -> tuple[float, float]:
    for s in range(ctx.n_seq_max):
        ctx.seq_rm(s, 0)
    n_prompts = 1 if shared else pl
    tokens = rng.integers(0, V, n_prompts * pp)
    pos = np.tile(np.arange(pp), n_prompts)
    seq = np.repeat(np.arange(n_prompts), pp)
    t0 = time.perf_counter()
    _decode(ctx, tokens, pos, seq)
    t_pp = time.perf_counter() - t0
    if shared:
        for s in range(1, pl):
            ctx.seq_cp(0, s, pp)
    t0 = time.perf_counter()
    for i in range(tg):
        _decode(ctx, rng.integers(0, V, pl), np.full(pl, pp + i), np.arange(pl))
    return t_pp, time.perf_counter() - t0


def llama_cpp_binary() -> Path:
    cache = Path(os.environ.get("LAMINA_CACHE", Path.home() / ".cache" / "lamina"))
    exe = cache / "llama.cpp" / "build" / "bin" / "llama-batched-bench"
    found = exe if exe.is_file() else shutil.which("llama-batched-bench")
    if not found:
        raise FileNotFoundError(f"{exe}: llama.cpp's llama-batched-bench is not built (tools/build_llama_cpp.sh)")
    return Path(found)


def llama_cpp_rows(path: str, args: argparse.Namespace) -> list[Row]:
    cmd = [
        str(llama_cpp_binary()),
        "-m",
        path,
        "-c",
        str(args.ctx_size),
        "-b",
        str(args.batch_size),
        "-ub",
        str(args.batch_size),
        "-npp",
        ",".join(map(str, args.npp)),
        "-ntg",
        ",".join(map(str, args.ntg)),
        "-npl",
        ",".join(map(str, args.npl)),
        "-t",
        str(args.threads),
        "-tb",
        str(args.threads),
        "-ngl",
        "0",
        "--output-format",
        "jsonl",
    ] + (["-pps"] if args.pps else [])
    runs: list[list[dict]] = []
    for _ in range(args.repetitions):
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"llama-batched-bench failed ({out.returncode}): {out.stderr.strip()[-500:]}")
        runs.append([json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")])
    rows = []
    for i, first in enumerate(runs[0]):
        t_pp = statistics.median(run[i]["t_pp"] for run in runs)
        t_tg = statistics.median(run[i]["t_tg"] for run in runs)
        rows.append(Row("llama.cpp", first["pp"], first["tg"], first["pl"], first["n_kv"], t_pp, t_tg, args.pps))
    return rows


def _record(r: Row, args: argparse.Namespace) -> dict:
    return {
        "engine": r.engine,
        "n_kv_max": args.ctx_size,
        "n_batch": args.batch_size,
        "is_pp_shared": int(args.pps),
        "n_threads": args.threads,
        "pp": r.pp,
        "tg": r.tg,
        "pl": r.pl,
        "n_kv": r.n_kv,
        "t_pp": r.t_pp,
        "speed_pp": r.speed_pp,
        "t_tg": r.t_tg,
        "speed_tg": r.speed_tg,
        "t": r.t,
        "speed": r.speed,
        "repetitions": args.repetitions,
    }


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    print(
        f"n_kv_max = {args.ctx_size}, n_batch = {args.batch_size}, is_pp_shared = {int(args.pps)}, "
        f"n_threads = {args.threads}, repetitions = {args.repetitions} (median)"
    )
    head = ("engine", "PP", "TG", "B", "N_KV", "T_PP s", "S_PP t/s", "T_TG s", "S_TG t/s", "T s", "S t/s")
    print("| " + " | ".join(f"{h:>9}" for h in head) + " |")
    print("|" + "|".join("-" * 11 for _ in head) + "|")
    for r in rows:
        cells = (
            r.engine,
            r.pp,
            r.tg,
            r.pl,
            r.n_kv,
            f"{r.t_pp:.3f}",
            f"{r.speed_pp:.2f}",
            f"{r.t_tg:.3f}",
            f"{r.speed_tg:.2f}",
            f"{r.t:.3f}",
            f"{r.speed:.2f}",
        )
        print("| " + " | ".join(f"{c:>9}" for c in cells) + " |")
    lamina = {(r.pp, r.tg, r.pl): r for r in rows if r.engine == "lamina"}
    peer = {(r.pp, r.tg, r.pl): r for r in rows if r.engine == "llama.cpp"}
    if peer:
        print(
            "\nS_TG lamina / llama.cpp: "
            + ", ".join(f"B={k[2]}: {lamina[k].speed_tg / peer[k].speed_tg:.2f}x" for k in lamina if k in peer)
        )


if __name__ == "__main__":
    sys.exit(main())
