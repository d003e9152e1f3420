"""`lamina run`'s llama.cpp sampling flags: -l/--logit-bias TOKEN_ID(+/-)BIAS
(repeatable), --typical, --mirostat / --mirostat-lr / --mirostat-ent."""

import math
import re
import subprocess
import sys

import pytest

from lamina.model_cache import fetch_model
from lamina.options import OptionError, logit_bias_flag
from lamina.tokenizer import Tokenizer

PROMPT = "The capital of France is"


def _run(*args, timeout=120):
    cmd = [sys.executable, "-m", "lamina", "run", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def smollm2():
    return str(fetch_model("smollm2-135m-instruct"))


@pytest.fixture(scope="module")
def tok(smollm2):
    from lamina.gguf.reader import GGUFFile

    return Tokenizer.from_metadata(GGUFFile(smollm2).metadata)


@pytest.mark.parametrize(
    "text, want",
    [("15043+1", (15043, 1.0)), ("15043-1", (15043, -1.0)), ("7-0.5", (7, -0.5)), ("7 + 2.5", (7, 2.5))],
)
def test_llama_cpp_syntax(text, want):
    assert logit_bias_flag(text) == want


def test_minus_inf_bans_and_bad_forms_are_refused():
    assert logit_bias_flag("15043-inf") == (15043, -math.inf)
    for bad in ("15043", "+1", "abc+1", "15043+", "15043*2", "15043+inf", "15043+nan", "-3+1"):
        with pytest.raises(OptionError, match="logit-bias"):
            logit_bias_flag(bad)


def test_logit_bias_bans_and_forces_tokens(smollm2, tok):
    base = ("-p", PROMPT, "-n", "3", "--temp", "0", "-t", "2")
    plain = _run(smollm2, *base)
    assert plain.returncode == 0, plain.stderr
    first = tok.encode(plain.stdout, add_bos=False)[0]  # the output is the completion alone
    banned = _run(smollm2, *base, "--logit-bias", f"{first}-inf")
    assert banned.returncode == 0, banned.stderr
    assert banned.stdout != plain.stdout
    zebra = tok.encode(" zebra", add_bos=False)[0]
    forced = _run(smollm2, *base, "-l", f"{zebra}+100", "-l", f"{first}-inf")
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.count(" zebra") == 3  # every step: the bias outweighs any logit


def test_out_of_vocabulary_token_is_one_line_error(smollm2):
    r = _run(smollm2, "-p", "Hi", "-n", "1", "-l", "99999999+1", "-t", "2")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "--logit-bias token id 99999999 is outside the vocabulary" in r.stderr


@pytest.mark.parametrize(
    "args, flag, why",
    [
        (["-l", "12"], "-l/--logit-bias", "must be TOKEN_ID"),
        (["--mirostat", "3"], "--mirostat", "mirostat must be 0"),
        (["--typical", "0"], "--typical", r"typical_p must be in \(0, 1\]"),
        (["--mirostat-lr", "-1"], "--mirostat-lr", r"mirostat_eta must be in \[0, 1\]"),
    ],
)
def test_bad_values_name_the_flag(args, flag, why):
    r = _run("-p", "hi", *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"argument {flag}: " in r.stderr and re.search(why, r.stderr), r.stderr


def test_mirostat_and_typical_flags_reach_the_sampler(smollm2):
    """--mirostat 2 at a tiny target surprise keeps only the most likely token: the greedy text"""
    base = (smollm2, "-p", "Once upon a time", "-n", "8", "-t", "2", "--seed", "7")
    greedy = _run(*base, "--temp", "0")
    tight = _run(*base, "--temp", "1.0", "--mirostat", "2", "--mirostat-ent", "0", "--mirostat-lr", "0")
    assert greedy.returncode == 0 and tight.returncode == 0, tight.stderr
    assert tight.stdout == greedy.stdout
