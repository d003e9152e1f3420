"""bin/run as a user meets it: the REPL driven through a real terminal (pty),
the one-shot mode, and one-line errors for bad input."""

import os
import subprocess
import sys

import pexpect
import pytest

from lamina.model_cache import fetch_model
from support.paths import REPO

ROOT = REPO
RUN = str(ROOT / "bin" / "run")
SUMMARY = r"generation \d+ tok [^\n]*context \d+/\d+"


@pytest.fixture(scope="module")
def smollm2():
    return str(fetch_model("smollm2-135m-instruct"))


def _run(*args, timeout=120):
    return subprocess.run([sys.executable, RUN, *args], capture_output=True, text=True, timeout=timeout)


def test_repl_two_turns_interrupt_reset_exit(smollm2):
    child = pexpect.spawn(
        sys.executable,
        [RUN, smollm2, "-c", "2048", "--temp", "0", "-t", "2"],
        encoding="utf-8",
        timeout=120,
        dimensions=(40, 200),
        env={**os.environ, "TERM": "xterm"},
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
        [RUN, smollm2, "-c", "128", "--temp", "0", "-t", "2"],
        encoding="utf-8",
        timeout=120,
        dimensions=(40, 200),
        env={**os.environ, "TERM": "xterm"},
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
        [RUN, smollm2, "-c", "128", "--temp", "0", "-t", "2", "--context-shift"],
        encoding="utf-8",
        timeout=120,
        dimensions=(40, 200),
        env={**os.environ, "TERM": "xterm"},
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
