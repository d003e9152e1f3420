"""Vocabularies the tokenizer tests check against, fetched once from PyPI.

- llama.cpp's tokenizer test vectors (`models/ggml-vocab-*.gguf` with their
  `.inp`/`.out` files) ship in the llama-cpp-python sdist; only those files are
  kept, under <cache>/vocab-tests/.
- Mistral 7B's SentencePiece model (`tokenizer.model.v1`) ships in the
  mistral-common wheel.

The version is pinned: the vectors change as llama.cpp does.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from lamina.gguf.reader import GGUFFile
from lamina.model_cache import cache_dir, fetch_model
from lamina.tokenizer import Tokenizer
from support.publish import publish_dir

LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"
MISTRAL_COMMON = "mistral-common==1.13.1"
VECTORS_SEPARATOR = "\n__ggml_vocab_test__\n"  # tests/test-tokenizer-0.cpp


def vocab_tests_dir() -> Path:
    """The folder of ggml-vocab-*.gguf files with their vectors, fetched on first use."""
    target = cache_dir() / "vocab-tests" / LLAMA_CPP_PYTHON.replace("==", "-")
    if target.is_dir():
        return target
    with tempfile.TemporaryDirectory(dir=_scratch()) as tmp:
        # --no-binary: the wheels are compiled and carry no models/ folder.
        sdist = _pip_download(LLAMA_CPP_PYTHON, Path(tmp), "--no-binary", "llama-cpp-python")
        staged = Path(tmp) / "vocab"
        staged.mkdir()
        with tarfile.open(sdist) as tar:
            for member in tar:
                name = member.name.rsplit("/", 1)[-1]
                if member.isfile() and "/vendor/llama.cpp/models/" in member.name and name.startswith("ggml-vocab-"):
                    with tar.extractfile(member) as src, open(staged / name, "wb") as dst:  # type: ignore[union-attr]
                        shutil.copyfileobj(src, dst)
        publish_dir(staged, target)  # whole or not at all
    return target


def read_vectors(gguf: Path) -> list[tuple[str, list[int]]]:
    """(input text, expected ids) pairs, read as llama.cpp's test-tokenizer-0 reads them."""
    raw = gguf.with_name(gguf.name + ".inp").read_bytes().decode("utf-8")
    texts = raw.split(VECTORS_SEPARATOR)
    if raw.endswith(VECTORS_SEPARATOR):
        texts.pop()
    lines = gguf.with_name(gguf.name + ".out").read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    assert len(texts) == len(lines), f"{gguf.name}: {len(texts)} inputs but {len(lines)} outputs"
    return [(text, [int(t) for t in line.split()]) for text, line in zip(texts, lines)]


def mistral_spm_model() -> Path:
    """Mistral 7B's tokenizer.model (SentencePiece, 32k, byte fallback)."""
    target = cache_dir() / "vocab-tests" / "mistral-tokenizer.model.v1"
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory(dir=_scratch()) as tmp:
        wheel = _pip_download(MISTRAL_COMMON, Path(tmp))
        staged = Path(tmp) / "tokenizer.model"
        with zipfile.ZipFile(wheel) as zf:
            staged.write_bytes(zf.read("mistral_common/data/tokenizer.model.v1"))
        staged.rename(target)
    return target


@functools.cache
def model_tokenizer(name: str) -> tuple[Tokenizer, dict]:
    """Tokenizer and metadata of a known real model, loaded once per session."""
    meta = dict(GGUFFile(fetch_model(name)).metadata)
    return Tokenizer.from_metadata(meta), meta


@functools.cache
def vocab_file_tokenizer(path: Path) -> Tokenizer:
    return Tokenizer.from_metadata(GGUFFile(path).metadata)


@functools.cache
def mistral_metadata() -> dict:
    """GGUF tokenizer metadata for tokenizer.model.v1, built the way llama.cpp's
    converter (_create_vocab_sentencepiece) builds it."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(mistral_spm_model()))
    tokens, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(
            2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 5 if sp.is_unused(i) else 6 if sp.is_byte(i) else 1
        )
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.bos_token_id": sp.bos_id(),
        "tokenizer.ggml.eos_token_id": sp.eos_id(),
        "tokenizer.ggml.unknown_token_id": sp.unk_id(),
    }


@functools.cache
def mistral_tokenizer() -> Tokenizer:
    return Tokenizer.from_metadata(mistral_metadata())


def _scratch() -> Path:
    path = cache_dir() / "vocab-tests"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _pip_download(requirement: str, dest: Path, *flags: str) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *flags, requirement, "-d", str(dest)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pip download {requirement} failed:\n{done.stderr[-2000:]}")
    (found,) = [p for p in dest.iterdir() if p.is_file()]
    return found
