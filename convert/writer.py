"""GGUF output through gguf-py's GGUFWriter, streamed and atomic.

The tensor table is known before any data is produced (types and shapes are
fixed by the recipe), so the header goes out first and each tensor's bytes are
written as soon as they are quantized: one tensor in memory at a time. The file
is written under a temporary name in the output directory and renamed onto the
real name only when complete and fsynced (then the directory, for the rename);
any failure or interrupt (SIGINT, SIGTERM: the CLI turns both into
KeyboardInterrupt) removes the temp file, and a full disk is an OSError the CLI
prints as one line, so nothing ever appears under the output name half-written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from lamina.convert.errors import ConvertError, OutputExistsError, OutputWriteError


@dataclass(frozen=True)
class OutTensor:
    name: str
    shape: tuple[int, ...]  # numpy order
    type: gguf.GGMLQuantizationType
    # written with ggml_n_dims' shape (trailing ne of 1 dropped), as llama-quantize writes it;
    # False keeps the shape as given (GPTQ's tensors: one group is still a [1, n_out] matrix)
    ggml_dims: bool = True

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        block, size = gguf.GGML_QUANT_SIZES[self.type]
        return self.n_elements // block * size


def check_output(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise OutputExistsError(f"{path}: already exists (pass --force to overwrite)")
    if not path.parent.is_dir():
        raise ConvertError(f"{path.parent}: output directory does not exist")


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temp path next to `path`, renamed onto it only if the block succeeds."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp made it 0600; the finished file gets the mode a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        _fsync(tmp)  # the bytes are on disk before the name is: a crash never leaves a complete-looking stub
        os.replace(tmp, path)
        _fsync(path.parent)  # and the rename itself
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StreamingGGUF:
    """Metadata first, then tensors in table order, one write per tensor."""

    def __init__(self, path: Path, arch: str, final: Path | None = None) -> None:
        self.w = gguf.GGUFWriter(path=None, arch=arch)
        self.path = path
        self.final = final or path  # the name errors give: the temp file's is an implementation detail
        self.table: list[OutTensor] = []

    def add_tensor_info(self, t: OutTensor) -> None:
        # ggml_n_dims, which llama-quantize writes: trailing ne of 1 (leading in numpy order) drop
        shape = t.shape
        while t.ggml_dims and len(shape) > 1 and shape[0] == 1:
            shape = shape[1:]
        self.w.add_tensor_info(t.name, shape, np.dtype(np.float32), t.nbytes, raw_dtype=t.type)
        self.table.append(t)

    def begin(self) -> None:
        with self._writing():
            self.w.write_header_to_file(path=self.path)
            self.w.write_kv_data_to_file()
            self.w.write_ti_data_to_file()

    def write(self, data: np.ndarray) -> None:
        with self._writing():
            self.w.write_tensor_data(np.ascontiguousarray(data).view(np.uint8))

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        # numpy's tofile says "Not enough free space to write N bytes" with no file
        # name and no errno: name the output and what happened to it
        try:
            yield
        except OSError as e:
            free = shutil.disk_usage(self.path.parent).free
            raise OutputWriteError(
                f"{self.final}: cannot write the output ({e.strerror or e}); {free} bytes free on its file system; "
                "nothing was written"
            ) from None

    def close(self) -> None:
        self.w.close()


def set_kv(
    w: gguf.GGUFWriter, key: str, value: Any, vtype: gguf.GGUFValueType, sub_type: gguf.GGUFValueType | None = None
) -> None:
    """A metadata value read back by lamina.gguf.reader, in GGUFWriter's terms."""
    if vtype == gguf.GGUFValueType.ARRAY:
        value = [_raw_string(v) for v in value] if sub_type == gguf.GGUFValueType.STRING else list(value)
    elif vtype == gguf.GGUFValueType.STRING:
        value = _raw_string(value)
    w.add_key_value(key, value, vtype, sub_type)


def _raw_string(s: str) -> bytes:
    # the reader keeps invalid UTF-8 as surrogate escapes; write the file's bytes back
    return s.encode("utf-8", "surrogateescape")


def move_to_end(w: gguf.GGUFWriter, *keys: str) -> None:
    """llama-quantize re-sets these keys, which appends them after the copied ones."""
    for key in keys:
        value = w.kv_data[0].pop(key)
        w.kv_data[0][key] = value
