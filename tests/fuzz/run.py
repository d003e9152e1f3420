"""Run one fuzz target under atheris (libFuzzer driving Python coverage).

    python tests/fuzz/run.py TARGET [libFuzzer flags] [corpus dirs]

TARGET names tests/fuzz/fuzz_TARGET.py, a module with `setup()` (load what
every input shares: models, vocabularies, the app) and `one_input(data)`,
which must return for any bytes or raise AssertionError / let a crash through.
lamina's modules are imported under atheris' instrumentation so libFuzzer sees
their branch coverage. tools/fuzz.sh is the usual way in."""

from __future__ import annotations

import importlib
import os
import resource
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = sorted(p.stem.removeprefix("fuzz_") for p in HERE.glob("fuzz_*.py"))
# libraries whose code is the attack surface of a target, instrumented with lamina's: the
# chat template renderer is jinja2's sandbox (lamina's own module alone saturates at ~100 edges)
INSTRUMENT_ALSO = {"chat_template": ["jinja2", "markupsafe"]}


def load_target(name: str, instrument: bool):
    if name not in TARGETS:
        raise SystemExit(f"unknown fuzz target {name!r}: expected one of {', '.join(TARGETS)}")
    sys.path[:0] = [str(HERE), str(HERE.parent)]  # the targets, and tests/support
    if instrument:
        import atheris

        with atheris.instrument_imports(include=["lamina", *INSTRUMENT_ALSO.get(name, [])]):
            module = importlib.import_module(f"fuzz_{name}")
    else:
        module = importlib.import_module(f"fuzz_{name}")
    module.setup()
    return module


def restart_with_own_peak_rss() -> None:
    """libFuzzer's -rss_limit_mb checks the peak RSS from getrusage, and Linux
    carries the parent's peak across (v)fork + exec: started from a pytest worker
    that once held 5 GB, every input here would be an "out-of-memory". A real
    fork of this still small process gives the fuzzer a peak of its own."""
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    current_mb = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20
    if os.environ.get("LAMINA_FUZZ_RESTARTED") or peak_mb < current_mb + 256:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.environ["LAMINA_FUZZ_RESTARTED"] = "1"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    sys.exit(code if code >= 0 else 128 - code)


def main() -> None:
    restart_with_own_peak_rss()
    if len(sys.argv) < 2:
        raise SystemExit(f"usage: run.py TARGET [libFuzzer args]; targets: {', '.join(TARGETS)}")
    import atheris

    module = load_target(sys.argv[1], instrument=True)
    atheris.Setup([sys.argv[0], *sys.argv[2:]], module.one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
