"""Emit the C source of the cffi extension `lamina._lamina` from the public
headers (lamina.h, lamina_gptq.h).

Run by CMake at build time: cuts the text between LM_CDEF_BEGIN/END out of
each public header, in the order given, and hands it to cffi verbatim, so the
binding can never drift from the headers.

    python cffi_emit.py HEADER [HEADER...] OUT.c
"""

from __future__ import annotations

import sys
from pathlib import Path

import cffi

BEGIN, END = "/* LM_CDEF_BEGIN */", "/* LM_CDEF_END */"


def cdef_from_header(header: Path) -> str:
    text = header.read_text()
    start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:stop]


def main(headers: list[str], out: str) -> None:
    ffi = cffi.FFI()
    # one cdef: later headers use types the first one declares (lm_threadpool)
    ffi.cdef("\n".join(cdef_from_header(Path(h)) for h in headers))
    ffi.set_source("lamina._lamina", "".join(f'#include "{Path(h).name}"\n' for h in headers))
    ffi.emit_c_code(out)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: cffi_emit.py HEADER [HEADER...] OUT.c")
    main(sys.argv[1:-1], sys.argv[-1])
