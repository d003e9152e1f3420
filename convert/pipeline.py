"""The shared back half of `convert` and `quantize`: a planned file, written.

A Job is everything decided before any byte is written: the output path, the
metadata, and per tensor its final name/shape/type plus a function producing
its bytes. run_job streams it into the atomic writer, reporting per tensor.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import gguf
import numpy as np

from lamina.convert.writer import OutTensor, StreamingGGUF, atomic_output


@dataclass
class Job:
    out: Path
    arch: str
    metadata: Callable[[gguf.GGUFWriter], None]
    tensors: Sequence[tuple[OutTensor, Callable[[], np.ndarray]]]  # producer -> u8 bytes of OutTensor.type


@dataclass
class TypeTotals:
    count: int = 0
    n_elements: int = 0
    nbytes: int = 0


@dataclass
class Summary:
    path: Path
    seconds: float
    by_type: dict[str, TypeTotals] = field(default_factory=dict)

    @property
    def n_elements(self) -> int:
        return sum(t.n_elements for t in self.by_type.values())

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.by_type.values())


class Progress(Protocol):
    def start(self, total_elements: int, n_tensors: int) -> None: ...
    def tensor_done(self, t: OutTensor) -> None: ...
    def tensor_begin(self, t: OutTensor) -> None: ...


def run_job(job: Job, progress: Progress | None = None) -> Summary:
    t0 = time.perf_counter()
    totals: dict[str, TypeTotals] = defaultdict(TypeTotals)
    if progress is not None:
        progress.start(sum(t.n_elements for t, _ in job.tensors), len(job.tensors))
    with atomic_output(job.out) as tmp:
        out = StreamingGGUF(tmp, job.arch, final=job.out)
        try:
            job.metadata(out.w)
            for t, _ in job.tensors:
                out.add_tensor_info(t)
            out.begin()
            for t, produce in job.tensors:
                if progress is not None:
                    progress.tensor_begin(t)
                data = produce()
                if data.nbytes != t.nbytes:
                    raise AssertionError(f"{t.name}: produced {data.nbytes} bytes, planned {t.nbytes}")
                out.write(data)
                tt = totals[t.type.name]
                tt.count += 1
                tt.n_elements += t.n_elements
                tt.nbytes += t.nbytes
                if progress is not None:
                    progress.tensor_done(t)
        finally:
            out.close()
    return Summary(job.out, time.perf_counter() - t0, dict(totals))
