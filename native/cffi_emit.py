"""Emit the C source of the cffi extension `runtime._lamina` from lamina.h.

Run by CMake at build time: cuts the text between LM_CDEF_BEGIN/END out of the
public header and hands it to cffi verbatim, so the binding can never drift
from the header.
"""
import sys
from pathlib import Path

import cffi

BEGIN, END = "/* LM_CDEF_BEGIN */", "/* LM_CDEF_END */"


def cdef_from_header(header: Path) -> str:
    text = header.read_text()
    start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:stop]


def main(header: str, out: str) -> None:
    ffi = cffi.FFI()
    ffi.cdef(cdef_from_header(Path(header)))
    ffi.set_source("runtime._lamina", '#include "lamina.h"')
    ffi.emit_c_code(out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
