"""lamina bench --spec: decode speed with and without speculative decoding.

    lamina bench --spec lookup [--spec-task code,free] [-m MODEL] [-n 128] [-r 3] [--llama-cpp]
    lamina bench --spec draft:SMALL.gguf --draft-max 4 ...

Each task is one greedy generation of -n tokens from a fixed prompt: "code"
asks to copy a source file given in the prompt (what prompt lookup is for),
"free" asks for a story (nothing to copy). Plain and speculative runs
alternate, -r times each after a warm-up (the prompt is cached after it), so
a machine whose load drifts slows both alike; the table shows the median
generation tokens/s (tokens after the first over their time, as `lamina
run` prints it), the speedup, the acceptance rate and whether the tokens
equal the plain run's. With --llama-cpp, llama.cpp's llama-lookup (or
llama-speculative with the draft model) runs the same prompt with greedy
sampling, from tools/build_llama_cpp.sh's build."""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from lamina import options
from lamina.cli.errors import checked, one_line_errors
from lamina.system import available_cpus

FREE_TASK = "Write a short story about a lighthouse keeper who finds a strange map washed up on the shore."


CODE_TASK_FILE = """import json
import os


class Inventory:
    def __init__(self, path):
        self.path = path
        self.items = {}

    def load(self):
        if os.path.exists(self.path):
            with open(self.path) as f:
                self.items = json.load(f)

    def save(self):
        with open(self.path, "w") as f:
            json.dump(self.items, f, indent=2)

    def add(self, name, count=1):
        self.items[name] = self.items.get(name, 0) + count

    def remove(self, name, count=1):
        if self.items.get(name, 0) < count:
            raise ValueError(f"not enough {name}")
        self.items[name] -= count
        if self.items[name] == 0:
            del self.items[name]

    def total(self):
        return sum(self.items.values())

    def report(self):
        lines = []
        for name in sorted(self.items):
            lines.append(f"{name}: {self.items[name]}")
        return "\\n".join(lines)


def main():
    inv = Inventory("inventory.json")
    inv.load()
    inv.add("apple", 3)
    inv.add("pear", 2)
    inv.remove("apple")
    print(inv.report())
    print("total:", inv.total())
    inv.save()


if __name__ == "__main__":
    main()
"""


def code_prompt(source: str) -> str:
    return f"Here is a Python file:\n```python\n{source}```\n\nThe same file, copied exactly:\n```python\n"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lamina bench --spec", description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", required=True, help="lookup, or draft:FILE (a draft model)")
    ap.add_argument("--spec-task", default="code,free", help="code, free, or both comma-separated")
    ap.add_argument(
        "--spec-file", type=Path, default=None, help="the source file the code task copies (default: a fixed one)"
    )
    ap.add_argument("-m", "--model", default=None, help="GGUF path or known model name (default model if none)")
    ap.add_argument("-n", "--n-gen", type=int, default=128)
    ap.add_argument("-t", "--threads", type=checked(options.n_threads), default=available_cpus())
    ap.add_argument("-r", "--repetitions", type=int, default=3)
    ap.add_argument("--draft-max", type=int, default=None, help="most tokens one draft verifies")
    ap.add_argument("--lookup-ngram", type=int, default=4, help="longest n-gram prompt lookup matches (default 4)")
    ap.add_argument("--llama-cpp", action="store_true", help="also run llama.cpp's llama-lookup / llama-speculative")
    return ap


def main(argv: list[str] | None = None) -> int:
    return _bench(build_parser().parse_args(argv))


def _speculative(args, n_threads):
    from lamina.speculative import LlamaDraftFile, LlamaPromptLookupDecoding, Speculative, SpeculativeError
    from lamina.speculative.draft import DEFAULT_DRAFT_MAX
    from lamina.speculative.step import DEFAULT_LOOKUP_MAX

    if args.spec == "lookup":
        n_max = DEFAULT_LOOKUP_MAX if args.draft_max is None else args.draft_max
        return Speculative(LlamaPromptLookupDecoding(args.lookup_ngram, max(1, n_max)), n_max), None
    if args.spec.startswith("draft:"):
        path = options.model_file(args.spec[len("draft:") :])
        n_max = DEFAULT_DRAFT_MAX if args.draft_max is None else args.draft_max
        return Speculative(LlamaDraftFile(path, n_max, n_threads=n_threads)), str(path)
    raise SpeculativeError(f"--spec: expected lookup or draft:FILE, got {args.spec!r}")


def _once(session, tokens, n, spec):
    from lamina.sampling import Sampler, SamplingParams

    r = session.generate(tokens, Sampler(SamplingParams(temperature=0)), max_tokens=n, speculative=spec)
    out = [p.token for p in r.pieces() if p.token is not None]
    return r.timings.gen_tps, out, r.spec


@one_line_errors("lamina bench")
def _bench(args) -> int:
    from lamina.generation import open_session
    from lamina.model_cache import resolve_model

    if args.repetitions < 1 or args.n_gen < 2:
        raise ValueError("-r must be >= 1 and -n >= 2")
    tasks = [t.strip() for t in args.spec_task.split(",")]
    bad = [t for t in tasks if t not in ("code", "free")]
    if bad:
        raise ValueError(f"--spec-task: expected code and/or free, got {bad[0]!r}")
    source = CODE_TASK_FILE if args.spec_file is None else args.spec_file.read_text(encoding="utf-8")
    path = str(resolve_model(args.model))
    spec, draft_path = _speculative(args, args.threads)
    session = open_session(path, n_ctx=4096, n_threads=args.threads, n_slots=1)
    # the free task through the model's chat template, as text (llama.cpp's tools get the same text)
    chat = session.template.render([{"role": "user", "content": FREE_TASK}], add_generation_prompt=True)
    prompts = {"code": code_prompt(source), "free": chat}
    rows = []
    for task in tasks:
        tokens = session.tokenizer.encode(prompts[task], special=True)
        if len(tokens) + args.n_gen >= session.n_ctx:
            raise ValueError(f"the {task} prompt ({len(tokens)} tokens) + -n {args.n_gen} does not fit 4096 positions")
        _, want, _ = _once(session, tokens, args.n_gen, None)  # warm-up; caches the prompt
        plain, fast, drafted, accepted, same = [], [], 0, 0, True
        for _ in range(args.repetitions):
            tps, _, _ = _once(session, tokens, args.n_gen, None)
            plain.append(tps)
            tps, got, st = _once(session, tokens, args.n_gen, spec)
            fast.append(tps)
            drafted, accepted = drafted + st.drafted, accepted + st.accepted
            same &= got == want
        rows.append(("lamina", task, statistics.median(plain), statistics.median(fast), drafted, accepted, same))
        if args.llama_cpp:
            rows.append(_llama_cpp(args, path, draft_path, task, prompts[task]))
    session.close()
    _print(args, path, "a fixed 50-line file" if args.spec_file is None else args.spec_file.name, rows)
    return 0


def _llama_cpp(args, path, draft_path, task, prompt):
    """llama.cpp's numbers for one task: medians of -r runs of llama-lookup (or
    llama-speculative), with drafting off (--spec-draft-n-max 0) and on."""
    bindir = Path(os.environ.get("LAMINA_CACHE", Path.home() / ".cache/lamina")) / "llama.cpp/build/bin"
    tool = bindir / ("llama-lookup" if draft_path is None else "llama-speculative")
    if not tool.exists():
        return ("llama.cpp", task, None, None, 0, 0, f"{tool.name} not built (tools/build_llama_cpp.sh)")
    n_draft = args.draft_max if args.draft_max is not None else (10 if draft_path is None else 8)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(prompt)
    try:
        base = [str(tool), "-m", path, "-f", f.name, "-n", str(args.n_gen), "-t", str(args.threads), "--temp", "0"]
        base += ["-c", "4096"] + (["-md", draft_path] if draft_path else [])

        def run(n):
            p = subprocess.run(base + ["--spec-draft-n-max", str(n)], capture_output=True, text=True, timeout=900)
            log = p.stdout + p.stderr
            m = re.search(r"decoded\s+(\d+) tokens in\s+([\d.]+) seconds", log)
            if p.returncode or not m:
                raise RuntimeError(f"{tool.name} failed ({p.returncode}): {log[-400:]}")
            acc = re.search(r"n_drafted\s*=\s*(\d+).*?n_accept\s*=\s*(\d+)", log, re.S)
            return int(m.group(1)) / float(m.group(2)), (int(acc.group(1)), int(acc.group(2))) if acc else (0, 0)

        run(n_draft)  # warm-up: file cache
        plain, fast, drafted, accepted = [], [], 0, 0
        for _ in range(args.repetitions):
            plain.append(run(0)[0])
            tps, (d, a) = run(n_draft)
            fast.append(tps)
            drafted, accepted = drafted + d, accepted + a
        return ("llama.cpp", task, statistics.median(plain), statistics.median(fast), drafted, accepted, None)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        return ("llama.cpp", task, None, None, 0, 0, str(e).splitlines()[0][:200])
    finally:
        os.unlink(f.name)


def _print(args, path, code_file: str, rows) -> None:
    print(
        f"model {os.path.basename(path)} | --spec {args.spec} | -n {args.n_gen} | -t {args.threads} | "
        f"median of {args.repetitions} | code task copies {code_file}"
    )
    print(
        f"| {'engine':<9} | {'task':<4} | {'tg t/s plain':>12} | {'tg t/s spec':>11} | {'speedup':>7} | "
        f"{'accept':>6} | {'same tokens':<11} |"
    )
    print(f"|{'-' * 11}|{'-' * 6}|{'-' * 14}|{'-' * 13}|{'-' * 9}|{'-' * 8}|{'-' * 13}|")
    for engine, task, plain, fast, drafted, accepted, same in rows:
        if plain is None:
            print(f"| {engine:<9} | {task:<4} | {'-':>12} | {'-':>11} | {'-':>7} | {'-':>6} | {same} |")
            continue
        rate = f"{100 * accepted / drafted:.0f}%" if drafted else "-"
        note = "-" if same is None else ("yes" if same else "NO")
        speedup = f"{fast / plain:.2f}x"
        print(f"| {engine:<9} | {task:<4} | {plain:>12.1f} | {fast:>11.1f} | {speedup:>7} | {rate:>6} | {note:<11} |")
    sys.stdout.flush()
