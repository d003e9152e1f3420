"""The per-architecture table of issue 16: each random tiny HF checkpoint of
tests/support/tiny_hf.py converted by `lamina convert` (q8_0) and benchmarked
by `lamina bench --llama-cpp` on the same file (llama.cpp through
llama-cpp-python), tokens/s of a short prefill and of decode, as a ratio.

    python tools/arch_table.py [--archs llama,qwen3] [-p 64] [-n 32] [-r 3] [-t 2]

Correctness (converter bytes, logits vs transformers) is the test suite's:
tests/convert/test_arch_checkpoints.py. This only measures speed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.tiny_hf import CASES, tiny_hf_checkpoint  # noqa: E402


def bench(path: Path, args: argparse.Namespace) -> dict[tuple[str, str], float]:
    """(engine, test) -> median tokens/s; lamina alone when llama.cpp cannot load the file"""
    cmd = [sys.executable, "-m", "lamina", "bench", "-m", str(path), "-p", str(args.p), "-n", str(args.n)]
    cmd += ["-r", str(args.r), "-t", str(args.t), "--json"]
    run = subprocess.run([*cmd, "--llama-cpp"], capture_output=True, text=True, timeout=1800)
    if run.returncode != 0:
        print(f"<!-- {path.name}: llama.cpp failed ({run.stderr.strip().splitlines()[-1]}); lamina alone -->")
        run = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=1800)
    out = run.stdout
    speeds = {}
    for rec in json.loads(out):
        test = f"pp{rec['n_prompt']}" if rec["n_prompt"] else f"tg{rec['n_gen']}"
        speeds[rec["build_commit"], test] = rec["avg_ts"]  # build_commit: "lamina" or "llama.cpp"
    return speeds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default=",".join(CASES))
    ap.add_argument("-p", type=int, default=64)
    ap.add_argument("-n", type=int, default=32)
    ap.add_argument("-r", type=int, default=3)
    ap.add_argument("-t", type=int, default=2)
    args = ap.parse_args()
    pp, tg = f"pp{args.p}", f"tg{args.n}"
    print(f"| architecture | {pp} lamina | {pp} llama.cpp | ratio | {tg} lamina | {tg} llama.cpp | ratio |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs.split(","):
            hf = tiny_hf_checkpoint(arch, Path(tmp) / f"tiny-{arch}")
            gguf = Path(tmp) / f"{arch}.gguf"
            subprocess.run(
                [sys.executable, "-m", "lamina", "convert", str(hf), "-o", str(gguf), "--q8_0"],
                check=True,
                capture_output=True,
                timeout=600,
            )
            s = bench(gguf, args)
            row = [arch]
            for test in (pp, tg):
                ours, theirs = s.get(("lamina", test)), s.get(("llama.cpp", test))
                ratio = f"{ours / theirs:.2f}x" if ours and theirs else "-"
                row += [f"{ours:.1f}" if ours else "-", f"{theirs:.1f}" if theirs else "-", ratio]
            print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
