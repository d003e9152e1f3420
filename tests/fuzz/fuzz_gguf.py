"""GGUF files from strangers: the reader (`lamina inspect`'s path, tables and
JSON), then the model load through the native core. Any bytes must end in a
file that opens or a typed lamina error naming the file; nothing else may
escape, and nothing may crash the process."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile

from rich.console import Console

from lamina.chat_template import ChatTemplate, ChatTemplateError
from lamina.cli.inspect import _print_tables, to_json
from lamina.engine.loader import load_model, read_hparams
from lamina.errors import GGUFError, LaminaError
from lamina.gguf.reader import GGUFFile
from lamina.tokenizer import Tokenizer

_path = ""


def setup() -> None:
    global _path
    folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
    fd, _path = tempfile.mkstemp(prefix="lamina-fuzz-", suffix=".gguf", dir=folder)
    os.close(fd)
    import atexit

    atexit.register(lambda: os.path.exists(_path) and os.unlink(_path))


def one_input(data: bytes) -> None:
    with open(_path, "wb") as f:
        f.write(data)
    try:
        gguf = GGUFFile(_path)
    except GGUFError as e:
        assert _path in str(e), e
        return
    with gguf:
        json.dumps(to_json(gguf), ensure_ascii=False)
        _print_tables(gguf, Console(file=io.StringIO(), width=120))
        for t in gguf.tensors:
            view = gguf.tensor_bytes(t.name)
            assert view.nbytes == t.nbytes and t.offset + t.nbytes <= len(data)
        with contextlib.suppress(LaminaError):
            Tokenizer.from_metadata(gguf.metadata)
        try:  # the file's own template, rendered as a chat would
            template = ChatTemplate.from_metadata(gguf.metadata)
            template.render([{"role": "user", "content": "hi"}], max_bytes=1 << 16, max_seconds=0.5)
        except ChatTemplateError:
            pass
        try:
            hparams = read_hparams(gguf)
            load_model(gguf, hparams).close()
        except GGUFError as e:
            assert _path in str(e), e
        except LaminaError:
            pass
