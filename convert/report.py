"""What the user sees: a rich progress bar advancing tensor by tensor, then a
summary table (tensors by type, size, bits per weight, time)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from lamina.convert.pipeline import Summary
from lamina.convert.writer import OutTensor

MIB = 1024 * 1024


class TensorProgress:
    """One bar weighted by weights written; the label names the tensor in flight."""

    def __init__(self, console: Console) -> None:
        self._bar = Progress(
            TextColumn("{task.description}", style="cyan"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("tensors"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._task: TaskID | None = None
        self._done = 0

    def start(self, total_elements: int, n_tensors: int) -> None:
        self._bar.start()
        self._task = self._bar.add_task("", total=n_tensors)

    def _started(self) -> TaskID:
        assert self._task is not None, "start() comes first"
        return self._task

    def tensor_begin(self, t: OutTensor) -> None:
        self._bar.update(self._started(), description=f"{t.name:<32} -> {t.type.name}")

    def tensor_done(self, t: OutTensor) -> None:
        self._bar.advance(self._started())

    def stop(self) -> None:
        if self._task is not None:
            self._bar.stop()


def summary_table(s: Summary) -> Table:
    table = Table(title=f"{s.path}  ({s.seconds:.1f} s)", title_justify="left")
    table.add_column("type")
    table.add_column("tensors", justify="right")
    table.add_column("weights", justify="right")
    table.add_column("MiB", justify="right")
    table.add_column("bits/weight", justify="right")
    for name, t in sorted(s.by_type.items(), key=lambda kv: -kv[1].nbytes):
        table.add_row(name, str(t.count), f"{t.n_elements:,}", f"{t.nbytes / MIB:.2f}", _bpw(t.nbytes, t.n_elements))
    table.add_section()
    table.add_row(
        "total",
        str(sum(t.count for t in s.by_type.values())),
        f"{s.n_elements:,}",
        f"{s.nbytes / MIB:.2f}",
        _bpw(s.nbytes, s.n_elements),
        style="bold",
    )
    return table


def _bpw(nbytes: int, n: int) -> str:
    return f"{8 * nbytes / n:.2f}" if n else "-"
