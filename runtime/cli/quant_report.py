"""`bin/quant-report A.gguf B.gguf`: per-tensor error of B against A.

A is the reference (typically F32/F16/BF16), B the quantized file. For every
tensor name in both files, both are dequantized to float32 (gguf-py's numpy
dequantizers, independent of lamina's native core) and compared:

    RMSE       sqrt(mean((b - a)^2))
    max abs    max |b - a|
    rel err    ||b - a||_2 / ||a||_2           (the "relative error", in %)
    bpw        8 * bytes / weights, for A and for B

with totals over all compared tensors (RMSE and relative error pooled over
every weight). A GPTQ INT4 layer in B (the four tensors STEM.qweight,
STEM.qzeros, STEM.scales, STEM.g_idx) is compared with STEM.weight in A, its
bpw counting all four; its zero-point convention is read from the first
metadata key ending in `gptq.checkpoint_format` ("gptq" = v1, "gptq_v2" =
v2; v1 when absent).

Tensors only in one file, or with different shapes, are listed and make the
exit status 1 (the matched ones are still reported). `--json` prints one
JSON object instead of tables.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from gguf import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize

from lamina.cli.errors import one_line_errors
from lamina.errors import LaminaError
from lamina.gguf.reader import GGUFFile, TensorInfo

if TYPE_CHECKING:  # rich loads only when tables are printed
    from rich.console import JustifyMethod

GPTQ_PARTS = ("qweight", "qzeros", "scales", "g_idx")


class QuantReportError(LaminaError, ValueError):
    """A tensor cannot be dequantized or compared."""


@dataclass
class TensorRow:
    name: str
    shape: list[int]  # numpy order [rows, cols]
    type_a: str
    type_b: str
    n_elements: int
    bytes_a: int
    bytes_b: int
    rmse: float
    max_abs: float
    rel_err: float  # fraction (0.01 = 1%)
    sq_err: float  # sum (b - a)^2
    sq_ref: float  # sum a^2

    @property
    def bpw_a(self) -> float:
        return 8 * self.bytes_a / self.n_elements

    @property
    def bpw_b(self) -> float:
        return 8 * self.bytes_b / self.n_elements


@dataclass
class Report:
    path_a: str
    path_b: str
    rows: list[TensorRow]
    only_in_a: list[str]
    only_in_b: list[str]
    shape_mismatches: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        return not (self.only_in_a or self.only_in_b or self.shape_mismatches)

    def totals(self) -> dict[str, Any]:
        n = sum(r.n_elements for r in self.rows)
        ba = sum(r.bytes_a for r in self.rows)
        bb = sum(r.bytes_b for r in self.rows)
        sq = sum(r.sq_err for r in self.rows)
        ref = sum(r.sq_ref for r in self.rows)
        return {
            "tensors": len(self.rows),
            "n_elements": n,
            "bytes_a": ba,
            "bytes_b": bb,
            "bpw_a": 8 * ba / n if n else 0.0,
            "bpw_b": 8 * bb / n if n else 0.0,
            "rmse": math.sqrt(sq / n) if n else 0.0,
            "max_abs": max((r.max_abs for r in self.rows), default=0.0),
            "rel_err": math.sqrt(sq / ref) if ref > 0 else (0.0 if sq == 0 else math.inf),
        }


# ----------------------------------------------------------------------------
# reading tensors as float32


def _dequantize(f: GGUFFile, t: TensorInfo) -> np.ndarray:
    raw = f.tensor_bytes(t.name)
    qt = t.ggml_type
    if qt in (
        GGMLQuantizationType.I8,
        GGMLQuantizationType.I16,
        GGMLQuantizationType.I32,
        GGMLQuantizationType.I64,
        GGMLQuantizationType.F64,
    ):
        dt = {
            GGMLQuantizationType.I8: np.int8,
            GGMLQuantizationType.I16: np.int16,
            GGMLQuantizationType.I32: np.int32,
            GGMLQuantizationType.I64: np.int64,
            GGMLQuantizationType.F64: np.float64,
        }[qt]
        return np.frombuffer(raw.tobytes(), dtype=dt).astype(np.float32).reshape(t.np_shape)
    try:
        out = gguf_dequantize(np.ascontiguousarray(raw), qt)
    except NotImplementedError:
        raise QuantReportError(f"{f.path}: tensor {t.name!r}: no dequantizer for type {qt.name}") from None
    return np.asarray(out, dtype=np.float32).reshape(t.np_shape)


def _gptq_format(f: GGUFFile) -> str:
    for key, value in f.metadata.items():
        if key.endswith("gptq.checkpoint_format") and isinstance(value, str):
            return "v2" if value.lower() in ("gptq_v2", "v2") else "v1"
    return "v1"


def _gptq_stems(f: GGUFFile) -> set[str]:
    names = {t.name for t in f.tensors}
    stems = set()
    for n in names:
        if n.endswith(".qweight"):
            stem = n[: -len(".qweight")]
            if all(f"{stem}.{p}" in names for p in GPTQ_PARTS):
                stems.add(stem)
    return stems


def _gptq_dequantize(f: GGUFFile, stem: str) -> tuple[np.ndarray, int]:
    from lamina.gptq.pack import GPTQPacked

    def arr(part: str, dtype) -> np.ndarray:
        t = f.tensor(f"{stem}.{part}")
        return np.frombuffer(f.tensor_bytes(t.name).tobytes(), dtype=dtype).reshape(t.np_shape)

    packed = GPTQPacked(
        arr("qweight", np.int32),
        arr("qzeros", np.int32),
        arr("scales", np.float16),
        arr("g_idx", np.int32).reshape(-1),
        _gptq_format(f),
    )
    try:
        w = packed.dequantize()
    except LaminaError as e:
        raise QuantReportError(f"{f.path}: GPTQ tensor {stem!r}: {e}") from None
    nbytes = sum(f.tensor(f"{stem}.{p}").nbytes for p in GPTQ_PARTS)
    return w, nbytes


# ----------------------------------------------------------------------------


def _compare(
    name: str, a: np.ndarray, b: np.ndarray, type_a: str, type_b: str, bytes_a: int, bytes_b: int
) -> TensorRow:
    a64 = a.astype(np.float64)
    d = b.astype(np.float64) - a64
    sq = float(np.sum(d * d))
    ref = float(np.sum(a64 * a64))
    n = a.size
    return TensorRow(
        name,
        list(a.shape),
        type_a,
        type_b,
        n,
        bytes_a,
        bytes_b,
        math.sqrt(sq / n) if n else 0.0,
        float(np.max(np.abs(d))) if n else 0.0,
        math.sqrt(sq / ref) if ref > 0 else (0.0 if sq == 0 else math.inf),
        sq,
        ref,
    )


def build_report(path_a: str, path_b: str, name_filter: str | None = None) -> Report:
    pattern = re.compile(name_filter) if name_filter else None
    with GGUFFile(path_a) as fa, GGUFFile(path_b) as fb:
        ta = {t.name: t for t in fa.tensors}
        tb = {t.name: t for t in fb.tensors}
        stems = _gptq_stems(fb)
        gptq_for = {f"{s}.weight": s for s in stems if f"{s}.weight" in ta and f"{s}.weight" not in tb}
        gptq_parts = {f"{s}.{p}" for s in gptq_for.values() for p in GPTQ_PARTS}
        rows, mismatches = [], []
        only_a = [n for n in ta if n not in tb and n not in gptq_for]
        only_b = [n for n in tb if n not in ta and n not in gptq_parts]
        for name, t in ta.items():
            if pattern and not pattern.search(name):
                continue
            if name in gptq_for:
                wb, nbytes_b = _gptq_dequantize(fb, gptq_for[name])
                type_b = f"GPTQ-INT4 ({_gptq_format(fb)})"
            elif name in tb:
                u = tb[name]
                if u.ne != t.ne:
                    mismatches.append({"name": name, "shape_a": list(t.np_shape), "shape_b": list(u.np_shape)})
                    continue
                wb, nbytes_b, type_b = _dequantize(fb, u), u.nbytes, u.ggml_type.name
            else:
                continue
            wa = _dequantize(fa, t)
            if wb.shape != wa.shape:
                mismatches.append({"name": name, "shape_a": list(wa.shape), "shape_b": list(wb.shape)})
                continue
            rows.append(_compare(name, wa, wb, t.ggml_type.name, type_b, t.nbytes, nbytes_b))
    return Report(path_a, path_b, rows, only_a, only_b, mismatches)


# ----------------------------------------------------------------------------
# output


def _num(x: float) -> Any:
    return x if math.isfinite(x) else str(x)


def to_json(rep: Report) -> dict[str, Any]:
    tensors = []
    for r in rep.rows:
        d = asdict(r)
        d.pop("sq_err")
        d.pop("sq_ref")
        d.update(bpw_a=r.bpw_a, bpw_b=r.bpw_b)
        tensors.append({k: (_num(v) if isinstance(v, float) else v) for k, v in d.items()})
    return {
        "a": rep.path_a,
        "b": rep.path_b,
        "tensors": tensors,
        "totals": {k: (_num(v) if isinstance(v, float) else v) for k, v in rep.totals().items()},
        "only_in_a": rep.only_in_a,
        "only_in_b": rep.only_in_b,
        "shape_mismatches": rep.shape_mismatches,
        "ok": rep.ok,
    }


def _size(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def print_report(rep: Report, console) -> None:
    from rich.table import Table
    from rich.text import Text

    console.print(f"[bold]quant-report[/]: B = {rep.path_b}\n              against A = {rep.path_a}")
    table = Table(title="per-tensor error of B against A", title_justify="left")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("tensor", "left"),
        ("shape", "left"),
        ("A", "left"),
        ("B", "left"),
        ("bpw A", "right"),
        ("bpw B", "right"),
        ("RMSE", "right"),
        ("max abs", "right"),
        ("rel err", "right"),
    )
    for col, just in columns:
        table.add_column(col, justify=just, no_wrap=col == "tensor")
    for r in rep.rows:
        table.add_row(
            Text(r.name),
            " x ".join(map(str, r.shape)),
            r.type_a,
            r.type_b,
            f"{r.bpw_a:.2f}",
            f"{r.bpw_b:.2f}",
            f"{r.rmse:.3e}",
            f"{r.max_abs:.3e}",
            f"{100 * r.rel_err:.3f}%",
        )
    t = rep.totals()
    table.add_section()
    table.add_row(
        f"[bold]total ({t['tensors']} tensors)",
        f"{t['n_elements']:,}",
        _size(t["bytes_a"]),
        _size(t["bytes_b"]),
        f"{t['bpw_a']:.2f}",
        f"{t['bpw_b']:.2f}",
        f"{t['rmse']:.3e}",
        f"{t['max_abs']:.3e}",
        f"{100 * t['rel_err']:.3f}%",
    )
    console.print(table)
    if rep.shape_mismatches:
        console.print(f"[red]shape mismatches ({len(rep.shape_mismatches)}):[/]")
        for m in rep.shape_mismatches:
            console.print(Text(f"  {m['name']}: A {m['shape_a']} vs B {m['shape_b']}"))
    if rep.only_in_a:
        console.print(f"[red]only in A ({len(rep.only_in_a)}):[/] " + ", ".join(rep.only_in_a), markup=True)
    if rep.only_in_b:
        console.print(f"[red]only in B ({len(rep.only_in_b)}):[/] " + ", ".join(rep.only_in_b), markup=True)
    console.print(
        f"total: {t['tensors']} tensors, {t['n_elements']:,} weights; A {t['bpw_a']:.2f} bpw, "
        f"B {t['bpw_b']:.2f} bpw; RMSE {t['rmse']:.4e}, relative error {100 * t['rel_err']:.3f}%"
        + ("" if rep.ok else "; [red]the tensor sets differ (see above)[/]")
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="lamina quant-report", description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="reference GGUF (e.g. F16)")
    ap.add_argument("b", help="GGUF to measure against it (e.g. a quantization of A)")
    ap.add_argument("--filter", metavar="REGEX", help="only tensors whose name matches")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = ap.parse_args(argv)
    return _report(args)


@one_line_errors("lamina quant-report")
def _report(args: argparse.Namespace) -> int:
    try:
        rep = build_report(args.a, args.b, args.filter)
    except re.error as e:
        raise ValueError(f"bad --filter: {e}") from None
    if args.json:
        json.dump(to_json(rep), sys.stdout)
        sys.stdout.write("\n")
    else:
        from rich.console import Console

        print_report(rep, Console(width=None if sys.stdout.isatty() else 180))
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
