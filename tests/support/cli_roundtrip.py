"""Tiny checkpoints converted the two ways the converter tests need: what a
new user does through the command line (convert to q8_0, inspect, generate a
few tokens), and once per module through the library's pipeline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lamina.convert.encode import Encoder
from lamina.convert.hf.convert import plan_hf
from lamina.convert.pipeline import run_job
from lamina.convert.recipes import get_mix

LAMINA = [sys.executable, "-m", "lamina"]


def convert_inspect_run(checkpoint: Path, out: Path, gguf_arch: str) -> None:
    """`lamina convert`, `lamina inspect` (which must name gguf_arch) and
    `lamina run -n 4` all succeed, and the run prints text and its timing"""
    subprocess.run([*LAMINA, "convert", str(checkpoint), "-o", str(out), "--q8_0"], check=True, timeout=300)
    shown = subprocess.run([*LAMINA, "inspect", str(out)], check=True, capture_output=True, text=True, timeout=120)
    assert gguf_arch in shown.stdout
    ran = subprocess.run(
        [*LAMINA, "run", str(out), "-p", "Hello", "-n", "4", "--temp", "0"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.stdout.strip() and "generation 4 tok" in ran.stderr


def convert_once(checkpoint: Path, mix: str, enc: Encoder, tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """lamina's GGUF of checkpoint at mix, through the library's pipeline
    (the module fixtures cache it per checkpoint and mix)"""
    out = tmp_path_factory.mktemp("gguf") / f"tiny-{name}-{mix}.gguf"
    run_job(plan_hf(checkpoint, get_mix(mix), enc, out))
    return out
