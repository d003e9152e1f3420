"""`bin/inspect MODEL.gguf`: show a GGUF file's metadata and tensor table.

Human output is rich tables; `--json` prints one JSON object for scripts.
Long arrays (vocabularies, merges) are summarized, never dumped.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from typing import Any

import numpy as np
from gguf import GGUFValueType
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from lamina.cli.errors import one_line_errors
from lamina.gguf.reader import GGUFFile, MetaType, TensorInfo

ARRAY_HEAD = 8  # items shown from an array
STRING_LIMIT = 200  # characters of a long string shown in the table view


def _clean(s: str) -> str:
    # Values keep raw bytes as surrogate escapes; make them printable.
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _scalar(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, str):
        return _clean(v)
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # strict JSON has no NaN/inf
    return v


def _type_name(t: MetaType) -> str:
    return f"{t.type.name}[{t.element.name}]" if t.element is not None else t.type.name


def _value_json(value: Any, t: MetaType) -> dict[str, Any]:
    if t.type != GGUFValueType.ARRAY:
        return {"type": t.type.name, "value": _scalar(value)}
    assert t.element is not None
    return {
        "type": "ARRAY",
        "element_type": t.element.name,
        "length": len(value),
        "values": [_scalar(v) for v in value[:ARRAY_HEAD]],
        "truncated": len(value) > ARRAY_HEAD,
    }


def _value_text(value: Any, t: MetaType) -> str:
    if t.type == GGUFValueType.ARRAY:
        head = ", ".join(repr(_scalar(v)) for v in value[:ARRAY_HEAD])
        more = ", …" if len(value) > ARRAY_HEAD else ""
        return f"[{head}{more}] ({len(value)} items)"
    v = _scalar(value)
    if isinstance(v, str):
        shown = repr(v[:STRING_LIMIT])
        return shown + (f" … ({len(v)} chars)" if len(v) > STRING_LIMIT else "")
    return str(v)


def _bpw(nbytes: int, n_elements: int) -> float:
    return 8 * nbytes / n_elements if n_elements else 0.0


def _tensor_json(t: TensorInfo) -> dict[str, Any]:
    return {
        "name": t.name,
        "ne": list(t.ne),
        "shape": list(t.np_shape),
        "type": t.ggml_type.name,
        "offset": t.offset,
        "nbytes": t.nbytes,
        "n_elements": t.n_elements,
        "bits_per_weight": round(_bpw(t.nbytes, t.n_elements), 4),
    }


def _totals(f: GGUFFile) -> dict[str, Any]:
    by_type: dict[str, dict[str, int]] = defaultdict(lambda: {"tensors": 0, "parameters": 0, "bytes": 0})
    for t in f.tensors:
        row = by_type[t.ggml_type.name]
        row["tensors"] += 1
        row["parameters"] += t.n_elements
        row["bytes"] += t.nbytes
    params = sum(t.n_elements for t in f.tensors)
    nbytes = sum(t.nbytes for t in f.tensors)
    return {
        "tensors": len(f.tensors),
        "parameters": params,
        "bytes": nbytes,
        "bits_per_weight": round(_bpw(nbytes, params), 4),
        "by_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1]["bytes"])),
    }


def to_json(f: GGUFFile) -> dict[str, Any]:
    return {
        "path": f.path,
        "version": f.version,
        "alignment": f.alignment,
        "data_offset": f.data_offset,
        "metadata": {k: _value_json(v, f.metadata_types[k]) for k, v in f.metadata.items()},
        "tensors": [_tensor_json(t) for t in f.tensors],
        "totals": _totals(f),
    }


def _size(n: int) -> str:
    value, unit = float(n), "B"
    for bigger in ("KiB", "MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{n} B" if unit == "B" else f"{value:.2f} {unit}"


def _print_tables(f: GGUFFile, console: Console) -> None:
    console.print(
        f"[bold]{escape(f.path)}[/]  GGUF v{f.version}, alignment {f.alignment}, data at byte {f.data_offset}"
    )

    meta = Table(title=f"metadata ({len(f.metadata)} keys)", title_justify="left")
    meta.add_column("key", style="cyan", no_wrap=True)
    meta.add_column("type")
    meta.add_column("value", overflow="fold")
    for k, v in f.metadata.items():
        t = f.metadata_types[k]
        # Text() cells: vocab pieces like "[/INST]" must not parse as markup.
        meta.add_row(Text(_clean(k)), _type_name(t), Text(_value_text(v, t)))
    console.print(meta)

    tensors = Table(title=f"tensors ({len(f.tensors)})", title_justify="left")
    tensors.add_column("name", style="cyan", no_wrap=True)
    tensors.add_column("shape (ne)", no_wrap=True)
    tensors.add_column("type")
    tensors.add_column("size", justify="right")
    tensors.add_column("bpw", justify="right")
    for info in f.tensors:
        tensors.add_row(
            Text(info.name),
            " x ".join(map(str, info.ne)),
            info.ggml_type.name,
            _size(info.nbytes),
            f"{_bpw(info.nbytes, info.n_elements):.2f}",
        )
    console.print(tensors)

    totals = _totals(f)
    by_type = Table(title="by type", title_justify="left")
    for col in ("type", "tensors", "parameters", "size", "bpw"):
        by_type.add_column(col, justify="left" if col == "type" else "right")
    for name, row in totals["by_type"].items():
        by_type.add_row(
            name,
            str(row["tensors"]),
            f"{row['parameters']:,}",
            _size(row["bytes"]),
            f"{_bpw(row['bytes'], row['parameters']):.2f}",
        )
    by_type.add_section()
    by_type.add_row(
        "[bold]total",
        str(totals["tensors"]),
        f"{totals['parameters']:,}",
        _size(totals["bytes"]),
        f"{totals['bits_per_weight']:.2f}",
    )
    console.print(by_type)
    console.print(
        f"total: {totals['tensors']} tensors, {totals['parameters']:,} parameters, "
        f"{_size(totals['bytes'])}, {totals['bits_per_weight']:.2f} bits per weight"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lamina inspect", description="Show a GGUF file's metadata and tensors.")
    parser.add_argument("model", help="path to a .gguf file")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    return _inspect(parser.parse_args(argv))


@one_line_errors("lamina inspect")
def _inspect(args: argparse.Namespace) -> int:
    with GGUFFile(args.model) as f:
        if args.json:
            json.dump(to_json(f), sys.stdout, ensure_ascii=False)
            sys.stdout.write("\n")
        else:
            # Off a terminal rich would squeeze tables to 80 columns.
            _print_tables(f, Console(width=None if sys.stdout.isatty() else 160))
    return 0
