"""Every fuzz target, briefly, in the normal suite: its seed corpus (crash
inputs of past finds included: each is a regression test) replays clean,
then libFuzzer mutates for a few seconds. Long runs: tools/fuzz.sh."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")

HERE = Path(__file__).resolve().parent
TARGETS = sorted(p.stem.removeprefix("fuzz_") for p in HERE.glob("fuzz_*.py"))
SECONDS = {"server": 4}  # the rest: 2; setup (models, app) comes on top


def test_every_target_has_seeds_and_the_corpus_stays_small() -> None:
    corpus = HERE / "corpus"
    for target in TARGETS:
        assert any((corpus / target).iterdir()), target
    total = sum(p.stat().st_size for p in corpus.rglob("*") if p.is_file())
    assert total < 1 << 20, total


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target_smoke(target: str, tmp_path: Path) -> None:
    seconds = SECONDS.get(target, 2)
    cmd = [
        sys.executable,
        str(HERE / "run.py"),
        target,
        f"-max_total_time={seconds}",
        "-timeout=20",
        "-rss_limit_mb=4096",
        f"-artifact_prefix={tmp_path}/",
        str(tmp_path / "new"),
        str(HERE / "corpus" / target),
    ]
    (tmp_path / "new").mkdir()
    dictionary = HERE / "dict" / f"{target}.dict"
    if dictionary.exists():
        cmd.insert(3, f"-dict={dictionary}")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, env=os.environ.copy())
    crashes = [p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-"))]
    assert r.returncode == 0 and not crashes, f"{target}: rc {r.returncode}, {crashes}\n{r.stderr[-4000:]}"
    assert "Done" in r.stderr, r.stderr[-2000:]


def test_a_parent_that_once_held_more_than_the_rss_limit_is_no_out_of_memory(tmp_path: Path) -> None:
    # Linux hands a parent's peak RSS to a (v)forked + exec'd child: a pytest
    # worker that peaked above -rss_limit_mb made every smoke run an "oom".
    parent = (
        "import subprocess, sys, numpy as np\n"
        "a = np.ones(96 << 20); a += 1; del a\n"  # ~768 MB peak, freed again
        "sys.exit(subprocess.run(sys.argv[1:]).returncode)\n"
    )
    cmd = [
        sys.executable,
        "-c",
        parent,
        sys.executable,
        str(HERE / "run.py"),
        "quants",
        "-max_total_time=3",
        "-rss_limit_mb=512",
        f"-artifact_prefix={tmp_path}/",
        str(HERE / "corpus" / "quants"),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert r.returncode == 0 and "out-of-memory" not in r.stderr, r.stderr[-3000:]
