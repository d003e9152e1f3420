"""lamina run --prompt-cache FILE: a second run of the same prompt loads the
saved state and evaluates only the last prompt token (the count `lamina run`
reports), with the same output; a longer prompt reuses the saved prefix; a
damaged or foreign FILE is a one-line error. Speed is not asserted."""

import re
import subprocess
import sys

import pytest

from lamina.model_cache import fetch_model

LAMINA = [sys.executable, "-m", "lamina", "run"]
PROMPT = "The three primary colors are red, blue and yellow. Mixing red and blue gives"


@pytest.fixture(scope="module")
def smollm2():
    return str(fetch_model("smollm2-135m-instruct"))


def run(model, cache, prompt, *flags):
    r = subprocess.run(
        [*LAMINA, model, "-p", prompt, "-n", "8", "--temp", "0", "-t", "2", "-c", "512", "--prompt-cache", str(cache)]
        + list(flags),
        capture_output=True,
        text=True,
        timeout=180,
    )
    return r


def counts(stderr):
    cached, total = map(int, re.search(r"(\d+) of (\d+) prompt tokens cached", stderr).groups())
    evaluated = int(re.search(r"prompt (\d+) tok", stderr).group(1))
    return cached, total, evaluated


def test_prompt_cache_reuses_the_saved_prompt(smollm2, tmp_path):
    cache = tmp_path / "prompt.state"
    first = run(smollm2, cache, PROMPT)
    assert first.returncode == 0, first.stderr
    cached, n, evaluated = counts(first.stderr)
    assert cached == 0 and evaluated == n and f"saved {n} tokens" in first.stderr
    assert cache.exists()
    second = run(smollm2, cache, PROMPT)
    assert second.returncode == 0, second.stderr
    assert counts(second.stderr) == (n, n, 1)  # only the last prompt token is evaluated again
    assert second.stdout == first.stdout and "saved" not in second.stderr
    # a longer prompt: the saved tokens are its prefix, the rest is evaluated and saved
    longer = run(smollm2, cache, PROMPT + " purple. Mixing blue and yellow gives")
    cached, m, evaluated = counts(longer.stderr)
    assert cached == n and evaluated == m - n and f"saved {m} tokens" in longer.stderr
    plain = subprocess.run(
        [*LAMINA, smollm2, "-p", PROMPT + " purple. Mixing blue and yellow gives", "-n", "8", "--temp", "0", "-t", "2"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert longer.stdout == plain.stdout


def test_prompt_cache_all_saves_the_reply_too(smollm2, tmp_path):
    cache = tmp_path / "all.state"
    first = run(smollm2, cache, PROMPT, "--prompt-cache-all")
    _, n, _ = counts(first.stderr)
    saved = int(re.search(r"saved (\d+) tokens", first.stderr).group(1))
    assert saved > n  # the prompt and the reply's evaluated tokens
    again = run(smollm2, cache, PROMPT)
    assert counts(again.stderr) == (n, n, 1) and again.stdout == first.stdout


def test_a_damaged_prompt_cache_is_a_one_line_error(smollm2, tmp_path):
    cache = tmp_path / "bad.state"
    assert run(smollm2, cache, PROMPT).returncode == 0
    data = bytearray(cache.read_bytes())
    data[len(data) // 2] ^= 1
    cache.write_bytes(bytes(data))
    r = run(smollm2, cache, PROMPT)
    assert r.returncode == 1 and "checksum" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "junk.state").write_bytes(b"not a state at all")
    r = run(smollm2, tmp_path / "junk.state", PROMPT)
    assert r.returncode == 1 and "not a lamina state" in r.stderr


def test_prompt_cache_flags_need_a_one_shot_prompt(smollm2, tmp_path):
    for flags in (["--prompt-cache", str(tmp_path / "x")], ["-p", "Hi", "--prompt-cache-all"]):
        r = subprocess.run([*LAMINA, smollm2, *flags], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "--prompt-cache" in r.stderr and "Traceback" not in r.stderr
