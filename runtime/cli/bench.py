"""bench: prompt processing and generation speed, measured like llama-bench.

pp<N>: N prompt tokens evaluated in batches; tg<N>: N tokens decoded one at
a time; both from an empty cache, or with -d D ("pp512 @ d4096", as
llama-bench's -d) after D cached tokens, which are computed once and kept
(each run cuts the cache back to them). Each test runs once to warm up, then
-r times; the table shows the median tokens/s (the machines are noisy) and
the sd, the JSON records llama-bench's fields plus median_ts. With
--llama-cpp the same tests run on llama.cpp (llama-cpp-python) in the same
process, for a side-by-side ratio of the medians. For tg the table also
shows the memory-bandwidth bound: weight and KV-cache bytes one token reads,
over the read bandwidth measured in the same run (lamina bench-kernels').

The cost of constrained output: --json-schema FILE (or --grammar FILE, GBNF)
adds two lamina tests of tg<N> that sample every token (temperature 0.8,
seeded) instead of feeding random ones: "tg<N> sampled" without the
constraint and "tg<N> json-schema" (or "grammar") with it, which masks the
logits before sampling and advances the matcher (a new document starts
whenever one is complete). Their ratio is the constraint's overhead.

    bin/bench -m MODEL [-p 512] [-n 128] [-d 0,4096] [-t 2] [-r 3] [--json] [--llama-cpp] [--json-schema FILE]

--spec lookup|draft:FILE runs cli/bench_spec.py instead: decode speed with
and without speculative decoding.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np

from lamina import options
from lamina.cli.errors import checked, one_line_errors
from lamina.errors import LaminaError
from lamina.system import available_cpus


class LaminaRunner:
    name = "lamina"

    def __init__(self, path: str, n_threads: int, n_ctx: int, n_batch: int, gpu_layers: int | str = 0):
        from lamina.engine.context import Context, Model
        from lamina.engine.offload import OffloadWarning

        self.model = Model.load(path, n_threads=n_threads)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", OffloadWarning)
            self.context = Context(self.model, n_ctx=n_ctx, n_batch=n_batch, n_threads=n_threads, gpu_layers=gpu_layers)
        for w in caught:
            print(f"bench: warning: {w.message}", file=sys.stderr)
        self.n_vocab = self.model.n_vocab
        # what actually ran: 0 when the offload fell back to the CPU
        self.gpu_layers = self.context.offload.gpu_layers
        self.backend = "CPU" if not self.gpu_layers else f"CPU+{self.context.offload.device}"

    def truncate(self, n_keep: int) -> None:
        self.context.truncate(n_keep)

    def eval(self, tokens: list[int]) -> np.ndarray:
        return self.context.eval(tokens)


class LlamaCppRunner:
    name = "llama.cpp"

    def __init__(self, path: str, n_threads: int, n_ctx: int, n_batch: int, gpu_layers: int | str = 0):
        try:
            import llama_cpp
            from llama_cpp import Llama
        except ImportError:
            raise LaminaError("--llama-cpp needs llama-cpp-python (pip install llama-cpp-python)") from None
        self.gpu_layers = -1 if gpu_layers == "auto" else int(gpu_layers)
        self.llm = Llama(
            path,
            n_ctx=n_ctx,
            n_batch=n_batch,
            n_ubatch=n_batch,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            n_gpu_layers=self.gpu_layers,
            verbose=False,
        )
        self.n_vocab = self.llm.n_vocab()
        self.backend = "CPU" if not llama_cpp.llama_supports_gpu_offload() or not self.gpu_layers else "GPU"

    def truncate(self, n_keep: int) -> None:
        if n_keep == 0:
            self.llm.reset()
            self.llm._ctx.kv_cache_clear()
        else:  # llama-cpp-python's eval drops every cached position from n_tokens on
            self.llm.n_tokens = n_keep

    def eval(self, tokens: list[int]) -> None:
        self.llm.eval(tokens)


def fill_depth(runner, n_depth: int, rng) -> None:
    """The -d tokens every test at that depth starts from (not timed)."""
    runner.truncate(0)
    if n_depth:
        runner.eval(rng.integers(0, runner.n_vocab, n_depth).tolist())


def run_test(runner, n_prompt: int, n_gen: int, n_depth: int, reps: int, rng) -> list[float]:
    """Seconds per repetition (after one warm-up run), each from n_depth cached tokens."""

    def once() -> float:
        runner.truncate(n_depth)
        tokens = rng.integers(0, runner.n_vocab, n_prompt + n_gen).tolist()
        t0 = time.perf_counter()
        if n_prompt:
            runner.eval(tokens[:n_prompt])
        for t in tokens[n_prompt:]:
            runner.eval([t])
        return time.perf_counter() - t0

    once()
    return [once() for _ in range(reps)]


def run_sampled(runner, n_gen: int, reps: int, grammar) -> tuple[list[float], list[float]]:
    """Seconds per repetition of n_gen decode steps that each sample the next
    token, without and with the grammar (masked and matched), after one
    warm-up run of each. The two alternate, so a machine whose load changes
    slows both alike."""
    from lamina.sampling import Sampler, SamplingParams
    from lamina.tokenizer import Tokenizer

    tok = Tokenizer.from_metadata(runner.model.native.gguf.metadata)
    grammar.matcher(tok)  # the vocabulary's one-time setup, outside the timing

    def once(g) -> float:
        runner.truncate(0)
        sampler = Sampler(SamplingParams(temperature=0.8), seed=0)
        matcher = g.matcher(tok) if g is not None else None
        logits = runner.eval(tok.encode("JSON:"))
        t0 = time.perf_counter()
        for _ in range(n_gen):
            if matcher is not None:
                token = sampler(matcher.mask(logits))
                matcher.accept(token)
                if matcher.done or token in tok.eot_ids:
                    matcher = g.matcher(tok)  # a new document (its compile is part of the cost)
            else:
                token = sampler(logits)
            logits = runner.eval([token])
        return time.perf_counter() - t0

    once(None), once(grammar)
    plain, constrained = [], []
    for _ in range(reps):
        plain.append(once(None))
        constrained.append(once(grammar))
    return plain, constrained


def record(
    runner, path: str, model_info: dict, args, n_prompt: int, n_gen: int, n_depth: int, seconds: list[float]
) -> dict:
    n = n_prompt + n_gen
    ts = [n / s for s in seconds]
    ns = [int(s * 1e9) for s in seconds]
    return {
        "build_commit": runner.name,
        "backends": runner.backend,
        "model_filename": path,
        "model_type": model_info["type"],
        "model_size": model_info["size"],
        "model_n_params": model_info["params"],
        "n_batch": args.batch_size,
        "n_ubatch": args.batch_size,
        "n_threads": args.threads,
        "type_k": "f16",
        "type_v": "f16",
        "n_gpu_layers": runner.gpu_layers,
        "use_mmap": True,
        "n_prompt": n_prompt,
        "n_gen": n_gen,
        "n_depth": n_depth,
        "test_time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "avg_ns": int(statistics.mean(ns)),
        "stddev_ns": int(statistics.stdev(ns)) if len(ns) > 1 else 0,
        "avg_ts": statistics.mean(ts),
        "stddev_ts": statistics.stdev(ts) if len(ts) > 1 else 0.0,
        "median_ts": statistics.median(ts),
        "samples_ns": ns,
        "samples_ts": ts,
    }


def model_info(path: str) -> dict:
    from lamina.gguf.reader import GGUFFile
    from lamina.gptq.format import model_weight_count

    with GGUFFile(path) as f:
        size = sum(t.nbytes for t in f.tensors)
        params = model_weight_count(f)
        arch = f.architecture
        ftype = f.get("general.file_type")
    return {
        "type": f"{arch} {params / 1e6:.0f}M" + (f" ftype {ftype}" if ftype is not None else ""),
        "size": size,
        "params": params,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a == "--spec" or a.startswith("--spec=") for a in argv):  # speculative decoding: its own tests
        from lamina.cli import bench_spec

        return bench_spec.main(argv)
    ap = argparse.ArgumentParser(
        prog="lamina bench",
        description=__doc__.split("\n\n")[0],
        epilog="lamina bench --spec lookup|draft:FILE [--help]: decode speed with and without speculative decoding",
    )
    ap.add_argument(
        "-m",
        "--model",
        action="append",
        help="GGUF path or known model name (default model if none); repeat it to bench several in turn",
    )
    ap.add_argument("-p", "--n-prompt", type=int, default=512)
    ap.add_argument("-n", "--n-gen", type=int, default=128)
    ap.add_argument("-t", "--threads", type=checked(options.n_threads), default=available_cpus())
    ap.add_argument("-d", "--n-depth", default="0", help="cached tokens before each test, comma-separated (0,4096)")
    ap.add_argument("-b", "--batch-size", type=int, default=512)
    ap.add_argument("-r", "--repetitions", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print llama-bench's JSON records")
    ap.add_argument("--llama-cpp", action="store_true", help="also run llama.cpp (llama-cpp-python) for a ratio")
    constraint = ap.add_mutually_exclusive_group()
    constraint.add_argument("--json-schema", metavar="FILE", help="also time tg sampled under this JSON schema")
    constraint.add_argument("--grammar", metavar="FILE", help="also time tg sampled under this GBNF grammar")
    ap.add_argument(
        "-ngl",
        "--gpu-layers",
        "--n-gpu-layers",
        dest="gpu_layers",
        default="0",
        help="layers to offload, comma-separated for several runs (e.g. 0,10,99) or 'auto'",
    )
    return _bench(ap.parse_args(argv))


@one_line_errors("lamina bench")
def _bench(args) -> int:
    from lamina.model_cache import resolve_model

    if args.repetitions < 1 or args.n_prompt < 0 or args.n_gen < 0:
        raise ValueError("-r must be >= 1, -p and -n >= 0")
    paths = [str(resolve_model(m)) for m in (args.model or [None])]  # every one found before any is timed
    depths = _depths(args.n_depth)
    grammar, label = _constraint(args)
    results = [(path, *_bench_model(args, path, depths, grammar, label)) for path in paths]
    if args.json:
        print(json.dumps([r for _, _, records in results for r in records], indent=2))
        return 0
    bandwidth = None
    if args.n_gen:
        from lamina.cli.bench_kernels import measure_bandwidth

        bandwidth = measure_bandwidth(args.threads, 3) * 1e9
    for i, (path, info, records) in enumerate(results):
        if len(results) > 1:
            print(("\n" if i else "") + f"== {path}")
        print_table(records, info, bandwidth)
    return 0


def _bench_model(args, path: str, depths: list[int], grammar, label) -> tuple[dict, list[dict]]:
    """(model_info, llama-bench records) of one model: every engine, offload, depth and test"""
    info = model_info(path)
    tests = [(args.n_prompt, 0)] * bool(args.n_prompt) + [(0, args.n_gen)] * bool(args.n_gen)
    # + the sampled tests' prompt
    n_ctx = max(depths) + max(args.n_prompt, args.n_gen + 16 * (grammar is not None), 1)
    runners: list[Callable] = [LaminaRunner] + ([LlamaCppRunner] if args.llama_cpp else [])
    from lamina.engine.offload import parse_gpu_layers

    ngl_values = [parse_gpu_layers(v) for v in str(args.gpu_layers).split(",")]
    records = []
    for make, ngl in ((m, n) for n in ngl_values for m in runners):
        runner = make(path, args.threads, n_ctx, args.batch_size, ngl)
        for n_depth in depths:
            fill_depth(runner, n_depth, np.random.default_rng(1))
            for n_prompt, n_gen in tests:
                secs = run_test(runner, n_prompt, n_gen, n_depth, args.repetitions, np.random.default_rng(0))
                records.append(record(runner, path, info, args, n_prompt, n_gen, n_depth, secs))
        if grammar is not None and args.n_gen and isinstance(runner, LaminaRunner):
            plain, constrained = run_sampled(runner, args.n_gen, args.repetitions, grammar)
            for secs, name in ((plain, "sampled"), (constrained, label)):
                records.append({**record(runner, path, info, args, 0, args.n_gen, 0, secs), "test_name": name})
        del runner
    return info, records


def _constraint(args):
    """(Grammar, its label) from --json-schema / --grammar, else (None, None)."""
    from lamina.grammar import Grammar, load_grammar_file

    if args.json_schema:
        return Grammar.from_json_schema(load_grammar_file(args.json_schema)), "json-schema"
    if args.grammar:
        return Grammar.from_gbnf(load_grammar_file(args.grammar)), "grammar"
    return None, None


def _depths(text: str) -> list[int]:
    try:
        depths = [int(v) for v in str(text).split(",")]
    except ValueError:
        raise ValueError(f"-d/--n-depth: expected comma-separated integers, got {text!r}") from None
    if not depths or min(depths) < 0:
        raise ValueError(f"-d/--n-depth: expected integers >= 0, got {text!r}")
    return depths


def test_name(r: dict) -> str:
    """llama-bench's spelling: pp512, tg128, pp512 @ d4096."""
    name = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
    if "test_name" in r:  # the sampled tests of --json-schema / --grammar
        name += " " + r["test_name"]
    return name + (f" @ d{r['n_depth']}" if r["n_depth"] else "")


def print_table(records: list[dict], info: dict, bandwidth: float | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    from lamina.engine.decode_bytes import decode_bytes

    table = Table(box=None)
    cols = ("engine", "model", "size", "params", "backend", "ngl", "threads", "test", "t/s (median)")
    for col in cols + (("bandwidth bound",) if bandwidth else ()):
        table.add_column(col, justify="left" if col in ("engine", "model", "backend", "test") else "right")
    base = {}
    for r in records:
        test = test_name(r)
        tps = f"{r['median_ts']:.2f} ± {r['stddev_ts']:.2f}"
        if r["build_commit"] == "lamina":
            base[test] = r["median_ts"]
        elif test in base:
            tps += f"  (lamina {base[test] / r['median_ts']:.2f}x)"
        bound = []
        if bandwidth:
            bound = [""]
            if r["n_gen"] and r["n_gpu_layers"] == 0:
                limit = bandwidth / decode_bytes(r["model_filename"], r["n_depth"], r["n_gen"])
                bound = [f"{limit:.1f} t/s, at {100 * r['median_ts'] / limit:.0f}%"]
        table.add_row(
            r["build_commit"],
            info["type"],
            f"{info['size'] / 2**20:.2f} MiB",
            f"{info['params'] / 1e6:.2f} M",
            r["backends"],
            str(r["n_gpu_layers"]),
            str(r["n_threads"]),
            test,
            tps,
            *bound,
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # a piped table keeps one row per line
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
