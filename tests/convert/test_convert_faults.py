"""Faults during a conversion (`lamina quantize` of the real SmolLM2 file, in
a child process): SIGTERM or SIGINT part-way leaves neither the output nor
its temp file and exits 130 with one line; a full disk (a 4 MiB tmpfs, or a
file-size limit where mounting is not allowed) is one clear error line, exit
1, and no partial output."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lamina.model_cache import fetch_model


def _default_sigint() -> None:
    # a run started in the background by a shell (`cmd &`) inherits SIGINT
    # ignored, and Python then leaves it ignored: a user's Ctrl-C starts from
    # the default disposition, so the child does too
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _quantize(out: Path, **kwargs) -> subprocess.Popen:
    src = fetch_model("smollm2-135m-instruct")
    cmd = [sys.executable, "-m", "lamina", "quantize", "--allow-requantize", "--quiet", "--threads", "1"]
    kwargs.setdefault("preexec_fn", _default_sigint)
    return subprocess.Popen(
        [*cmd, str(src), str(out), "q8_0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith((out.name, f".{out.name}")))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_conversion_leaves_no_file(sig: signal.Signals, tmp_path: Path) -> None:
    out = tmp_path / "out.gguf"
    proc = _quantize(out)
    deadline = time.monotonic() + 60
    # wait until tensor data is being written to the temp file, then interrupt
    while time.monotonic() < deadline and proc.poll() is None:
        partial = [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
        if partial and partial[0].stat().st_size > 1 << 20:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the conversion ended before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted; no output was written" in err
    assert _leftovers(out) == []


@contextlib.contextmanager
def _tiny_tmpfs(path: Path, size: str) -> Iterator[bool]:
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    try:
        yield mounted.returncode == 0
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", str(path)], check=True)


def test_a_full_disk_is_one_clear_error_and_no_partial_output(tmp_path: Path) -> None:
    with _tiny_tmpfs(tmp_path / "small", "4m") as mounted:
        out = tmp_path / "small" / "out.gguf"
        if mounted:  # a real ENOSPC
            proc = _quantize(out)
        else:  # no mount permission: the kernel's file-size limit ends the write the same way (EFBIG)

            def limit() -> None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))

            proc = _quantize(out, preexec_fn=limit)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, err
        assert "Traceback" not in err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"error: {out}: cannot write the output"), err
        assert "nothing was written" in lines[0]
        assert _leftovers(out) == []
        if mounted:
            assert os.statvfs(out.parent).f_bfree == os.statvfs(out.parent).f_blocks  # the space is given back
