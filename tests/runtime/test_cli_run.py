"""`lamina run` as a user meets it: the REPL driven through a real terminal
(pty), the one-shot mode, and one-line errors for bad input. The command runs
as `python -m lamina` of this interpreter, which is what the `lamina` script does."""

import os
import re
import signal
import subprocess
import sys
import time

import pexpect
import pytest

from lamina.model_cache import fetch_model
from support.paths import REPO

ROOT = REPO
LAMINA = [sys.executable, "-m", "lamina"]
SUMMARY = r"generation \d+ tok [^\n]*context \d+/\d+"


def _interruptible() -> None:
    # a runner started in the background (nohup, `cmd &` in a script) passes
    # SIGINT on ignored, and Python then never turns Ctrl-C into KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def smollm2():
    return str(fetch_model("smollm2-135m-instruct"))


def _run(*args, timeout=120):
    return subprocess.run([*LAMINA, "run", *args], capture_output=True, text=True, timeout=timeout)


def test_repl_two_turns_interrupt_reset_exit(smollm2):
    child = pexpect.spawn(
        sys.executable,
        ["-m", "lamina", "run", smollm2, "-c", "2048", "--temp", "0", "-t", "2"],
        encoding="utf-8",
        timeout=120,
        dimensions=(40, 200),
        env={**os.environ, "TERM": "xterm"},
        preexec_fn=_interruptible,
    )
    child.expect(r"/help for commands")
    child.expect("> ")
    child.sendline("What is the capital of France? Answer in one word.")
    child.expect(SUMMARY)
    first = child.before
    assert "Paris" in first
    child.expect("> ")
    # the second turn reuses the cache: only the new turn's tokens are evaluated
    child.sendline("And of Germany?")
    child.expect(r"prompt (\d+) tok")
    assert int(child.match.group(1)) < 40
    child.expect(SUMMARY)
    child.expect("> ")
    # Ctrl-C in the middle of a long reply stops it and keeps the session
    child.sendline("Write a very long story about a dragon who learns to code. Make it at least 500 words.")
    child.expect(r"500 words\.\r\n")  # the terminal's echo of the input line
    child.expect(r"\w+ \w+ \w+ \w+ \w+ \w+")  # some of the reply has streamed
    child.sendintr()
    child.expect(r"stopped")
    child.expect("> ")
    child.sendline("/stats")
    child.expect(r"session: prompt \d+ tok")
    child.expect("> ")
    child.sendline("/reset")
    child.expect(r"conversation reset")
    child.expect("> ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_one_shot_prints_only_the_completion(smollm2):
    r = _run(smollm2, "-p", "The capital of France is", "-n", "8", "--temp", "0", "-t", "2")
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout
    assert "tok/s" not in r.stdout and "tok/s" in r.stderr  # timings go to stderr
    again = _run(smollm2, "-p", "The capital of France is", "-n", "8", "--temp", "0", "-t", "2")
    assert again.stdout == r.stdout  # greedy is deterministic


def test_one_shot_same_seed_same_output(smollm2):
    args = (smollm2, "-p", "Once upon a time", "-n", "16", "--temp", "1.0", "--seed", "7", "-t", "2")
    assert _run(*args).stdout == _run(*args).stdout


@pytest.mark.parametrize(
    "make,expect",
    [
        (lambda tmp: str(tmp / "missing.gguf"), "missing.gguf"),
        (
            lambda tmp: (tmp / "notgguf.gguf").write_text("hello world, not a gguf") and str(tmp / "notgguf.gguf"),
            "notgguf.gguf",
        ),
    ],
)
def test_bad_model_file_is_one_line_error(tmp_path, make, expect):
    r = _run(make(tmp_path), "-p", "hi", "-n", "1")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert expect in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_unsupported_architecture_is_one_line_error(tmp_path):
    import gguf
    import numpy as np

    path = tmp_path / "mamba.gguf"
    w = gguf.GGUFWriter(str(path), "mamba")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((8, 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    r = _run(str(path), "-p", "hi", "-n", "1")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "mamba" in r.stderr and "llama" in r.stderr, r.stderr  # names it and what is supported


def test_prompt_longer_than_context_is_one_line_error(smollm2):
    r = _run(smollm2, "-c", "64", "-p", "word " * 200, "-n", "4")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "context" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_repl_says_when_the_context_is_full(smollm2):
    child = pexpect.spawn(
        sys.executable,
        ["-m", "lamina", "run", smollm2, "-c", "128", "--temp", "0", "-t", "2"],
        encoding="utf-8",
        timeout=120,
        dimensions=(40, 200),
        env={**os.environ, "TERM": "xterm"},
        preexec_fn=_interruptible,
    )
    child.expect("> ")
    # the reply runs into the end of the 128-token context
    child.sendline("Write a very long story about a dragon. Make it at least 500 words.")
    child.expect(r"context full: /reset to start over")
    child.expect("> ")
    # the next turn cannot fit at all: it says so instead of evaluating
    child.sendline("Continue.")
    child.expect(r"context full \(128 tokens\): /reset to start over")
    child.expect("> ")
    child.sendline("/reset")
    child.expect(r"conversation reset")
    child.expect("> ")
    child.sendline("Hi")
    child.expect(SUMMARY)
    child.expect("> ")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_repl_context_shift_drops_the_oldest_turns(smollm2):
    child = pexpect.spawn(
        sys.executable,
        ["-m", "lamina", "run", smollm2, "-c", "128", "--temp", "0", "-t", "2", "--context-shift"],
        encoding="utf-8",
        timeout=120,
        dimensions=(40, 200),
        env={**os.environ, "TERM": "xterm"},
        preexec_fn=_interruptible,
    )
    child.expect("> ")
    child.sendline("Write a very long story about a dragon. Make it at least 500 words.")
    child.expect(r"context full: /reset to start over")
    child.expect("> ")
    # with --context-shift the first exchange is dropped and the new turn is answered
    child.sendline("Continue.")
    i = child.expect([SUMMARY, r"context full \(128 tokens\)"])
    assert i == 0
    child.expect("> ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)


# -- what a new user hit (issue 13) ---------------------------------------------


def _repl(*args):
    return pexpect.spawn(
        sys.executable,
        ["-m", "lamina", "run", *args],
        encoding="utf-8",
        timeout=120,
        dimensions=(40, 200),
        env={**os.environ, "TERM": "xterm"},
        preexec_fn=_interruptible,
    )


def test_the_lamina_command_and_its_subcommands():
    top = subprocess.run([*LAMINA, "--help"], capture_output=True, text=True, timeout=60)
    assert top.returncode == 0
    names = ("run", "convert", "quantize", "imatrix", "bench", "bench-kernels", "perplexity", "inspect", "quant-report")
    for name in names:
        assert f"  {name} " in top.stdout
        sub = subprocess.run([*LAMINA, name, "--help"], capture_output=True, text=True, timeout=60)
        assert sub.returncode == 0 and f"usage: lamina {name}" in sub.stdout, (name, sub.stderr)
    version = subprocess.run([*LAMINA, "--version"], capture_output=True, text=True, timeout=60)
    assert version.stdout.startswith("lamina 0.")
    bad = subprocess.run([*LAMINA, "chat"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown subcommand 'chat'" in bad.stderr


def test_bin_run_is_an_alias_of_lamina_run(smollm2):
    args = [smollm2, "-p", "The capital of France is", "-n", "6", "--temp", "0", "-t", "2"]
    alias = subprocess.run([sys.executable, str(ROOT / "bin" / "run"), *args], capture_output=True, text=True)
    assert alias.returncode == 0 and alias.stdout == _run(*args).stdout


@pytest.mark.parametrize(
    "args, flag, why",
    [
        (["--temp", "nan"], "--temp", "temperature must be a finite number"),
        (["--temp", "inf"], "--temp", "temperature must be a finite number"),
        (["-t", "500"], "-t/--threads", r"n_threads must be in \[1, \d+\]"),
        (["--seed", str(2**32)], "--seed", r"seed must be in \[0, 4294967294\], or -1"),
        (["--top-p", "-1"], "--top-p", r"top_p must be in \(0, 1\]"),
        (["-ngl", "-2"], "-ngl/--gpu-layers/--n-gpu-layers", r"-1 \(all layers\), 'auto'"),
        (["-n", "0"], "-n/--n-predict", "n_predict must be -1"),
    ],
)
def test_bad_values_are_refused_naming_the_flag(args, flag, why):
    r = _run("-p", "hi", *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"argument {flag}: " in r.stderr and re.search(why, r.stderr), r.stderr


def test_seed_minus_one_and_all_gpu_layers_are_accepted(smollm2):
    r = _run(smollm2, "-p", "Hi", "-n", "2", "--seed", "-1", "-ngl", "-1", "-t", "2")
    assert r.returncode == 0, r.stderr
    assert "no usable GPU" in r.stderr  # this machine has none: one warning and a CPU run


def test_prompt_file(smollm2, tmp_path):
    f = tmp_path / "prompt.txt"
    f.write_text("The capital of France is", encoding="utf-8")
    from_file = _run(smollm2, "-f", str(f), "-n", "6", "--temp", "0", "-t", "2")
    assert from_file.returncode == 0, from_file.stderr
    assert (
        from_file.stdout == _run(smollm2, "-p", "The capital of France is", "-n", "6", "--temp", "0", "-t", "2").stdout
    )
    missing = _run(smollm2, "-f", str(tmp_path / "nope.txt"))
    assert missing.returncode == 1 and "nope.txt" in missing.stderr and "Traceback" not in missing.stderr


def test_n_predict_bounds_each_repl_reply(smollm2):
    child = _repl(smollm2, "-c", "512", "--temp", "0", "-t", "2", "-n", "5")
    child.expect("> ")
    child.sendline("Write a long story about a dragon.")
    child.expect(r"generation (\d+) tok")
    assert int(child.match.group(1)) == 5
    child.expect("> ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)


def test_ctrl_c_stops_a_long_prefill_between_chunks(smollm2):
    """the system prompt makes a ~3,500-token first prefill; Ctrl-C during it
    stops it after the chunk in flight, not at its end"""
    system = " ".join(f"Rule {i}: answer politely." for i in range(400))
    child = _repl(smollm2, "-c", "4096", "--temp", "0", "-t", "2", "--system", system)
    child.expect("> ")
    child.sendline("Hi")
    time.sleep(1.5)  # inside the prefill (seconds long on any CPU here)
    child.sendintr()
    child.expect(r"stopped")
    child.expect("> ")
    child.sendline("/stats")
    child.expect(r"context (\d+)/4096 tokens")
    evaluated = int(child.match.group(1))
    assert 0 < evaluated < 3000, evaluated
    child.expect("> ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)


def test_chat_with_a_base_model_says_it_has_no_template():
    gemma = str(fetch_model("gemma-3-270m"))
    r = _run(gemma, "-p", "Hello", "--chat", "-n", "4", "-t", "2")
    assert r.returncode == 0, r.stderr
    assert "has no chat template of its own (a base model?)" in r.stderr
    plain = _run(gemma, "-p", "Hello", "-n", "4", "-t", "2")
    assert "no chat template" not in plain.stderr
