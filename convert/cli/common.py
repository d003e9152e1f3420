"""What `convert` and `quantize` share on the command line: running a planned
job with progress and a summary, and turning every expected failure into one
line on stderr and exit status 1 (130 when interrupted), never a traceback."""

from __future__ import annotations

import logging
import signal
import warnings
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape

from lamina.convert.encode import Encoder
from lamina.convert.imatrix.apply import ImatrixMissingWarning
from lamina.convert.pipeline import Job, run_job
from lamina.convert.report import TensorProgress, summary_table
from lamina.errors import LaminaError
from lamina.system import available_cpus


def default_threads() -> int:
    return available_cpus()


def execute(plan: Callable[[Encoder], Job], threads: int, quiet: bool) -> int:
    # gguf-py warns on purpose-made key overwrites and tokenizer quirks llama.cpp also ignores
    logging.getLogger("gguf").setLevel(logging.ERROR)
    # a `kill` is an interrupt too: unwind so the temp file is removed
    signal.signal(signal.SIGTERM, _interrupt)
    console = Console(stderr=True)
    encoder = Encoder(threads)
    progress = None if quiet else TensorProgress(console)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            job = plan(encoder)
        for w in caught:  # ours as one line, anything else as Python shows it
            if issubclass(w.category, ImatrixMissingWarning):
                console.print(f"[bold yellow]warning:[/] {escape(str(w.message))}", highlight=False, soft_wrap=True)
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)
        summary = run_job(job, progress)
    except LaminaError as e:
        return _fail(console, str(e))
    except OSError as e:
        return _fail(console, f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}")
    except KeyboardInterrupt:
        return _fail(console, "interrupted; no output was written", status=130)
    finally:
        if progress is not None:
            progress.stop()
        encoder.close()
    if not quiet:
        Console().print(summary_table(summary))
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _fail(console: Console, message: str, status: int = 1) -> int:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return status
