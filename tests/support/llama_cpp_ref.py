"""llama.cpp's own two-step pipeline, as the reference for `bin/convert`.

Step one is llama.cpp's convert_hf_to_gguf.py (with its bundled gguf-py), run
to f32 from the llama-cpp-python sdist, which vendors the whole llama.cpp tree;
the result is cached in ~/.cache/lamina/ref/. Step two is llama-quantize,
reached through llama-cpp-python's `llama_model_quantize` when that package is
installed; otherwise tests quantize each f32 tensor with ggml's
ggml_quantize_chunk (tests/support/ggml_oracle.py) at the type the recipe chose.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from lamina.model_cache import cache_dir
from support.oracle_cache import cached_file, oracle_key
from support.publish import publish_dir

SDIST = "llama-cpp-python==0.3.36"  # pinned so the reference cannot drift


def llama_cpp_tree() -> Path:
    """vendor/llama.cpp of the sdist that tools/test.sh caches, unpacked once."""
    root = cache_dir() / "llama_cpp_src"
    found = sorted(root.glob("llama_cpp_python-*/vendor/llama.cpp/convert_hf_to_gguf.py"))
    if found:
        return found[-1].parent
    archive = cache_dir() / "sdist" / f"llama_cpp_python-{SDIST.split('==')[1]}.tar.gz"
    if not archive.is_file():
        raise FileNotFoundError(
            f"{archive} is missing: tools/test.sh downloads it (llama.cpp's converter is the oracle of these tests)"
        )
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp, tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if "/vendor/llama.cpp/" in m.name and "/ggml/" not in m.name]
        tar.extractall(tmp, members=members, filter="data")
        for unpacked in Path(tmp).iterdir():
            publish_dir(unpacked, root / unpacked.name, "convert_hf_to_gguf.py")  # whole, or not at all
    return llama_cpp_tree()


def reference_gguf(model: str, hf_dir: Path, outtype: str = "f32") -> Path:
    """llama.cpp's conversion of a checkpoint directory (f32 or f16), cached
    under the checkpoint's bytes (tests/support/oracle_cache.py)."""
    tree = llama_cpp_tree()

    def convert(tmp: Path) -> None:
        script = tree / "convert_hf_to_gguf.py"
        cmd = [sys.executable, str(script), str(hf_dir), "--outtype", outtype, "--outfile", str(tmp)]
        subprocess.run(cmd, check=True, capture_output=True)

    return cached_file("convert", f"{model}-{outtype}.gguf", oracle_key(SDIST, hf_dir, outtype), convert)


# llama.cpp always runs in a child process: its libggml-base.so.0 and the ggml
# oracle's (libggml-python, tests/support/ggml_oracle.py) share a soname, and a process
# gets only the first one it loads.
_CHILD = r"""
import json, sys
import numpy as np
import llama_cpp
job = json.loads(sys.argv[1])
if job["op"] == "schema_gbnf":
    print(llama_cpp.LlamaGrammar.from_json_schema(job["schema"], verbose=False)._grammar, end="")
    sys.exit(0)
if job["op"] == "quantize":
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = job["ftype"]
    params.nthread = job["threads"]
    params.allow_requantize = job.get("allow_requantize", False)
    sys.exit(llama_cpp.llama_model_quantize(job["src"].encode(), job["dst"].encode(), params))
if job["op"] == "embed":
    llm = llama_cpp.Llama(model_path=job["model"], embedding=True, pooling_type=job["pooling"], n_ctx=job["n_ctx"],
                          n_batch=job["n_ctx"], n_ubatch=job["n_ctx"], n_threads=2, verbose=False)
    ids = [llm.tokenize(t.encode(), add_bos=True, special=True) for t in job["texts"]]
    vecs = [llm.embed(t, normalize=False) for t in job["texts"]]
    toks = {f"tokens{i}": np.asarray(t) for i, t in enumerate(ids)}
    np.savez(job["out"], vectors=np.asarray(vecs, np.float32), **toks)
    sys.exit(0)
if job["op"] == "tokenize":
    llm = llama_cpp.Llama(model_path=job["model"], vocab_only=True, verbose=False)
    print(json.dumps([llm.tokenize(t.encode(), add_bos=job["add_bos"], special=job["special"]) for t in job["texts"]]))
    sys.exit(0)
if job["op"] == "infill":
    # llama.cpp's infill prompt (tools/server format_prompt_infill, no repository context)
    llm = llama_cpp.Llama(model_path=job["model"], vocab_only=True, verbose=False)
    v = llama_cpp.llama_model_get_vocab(llm._model.model)
    pre, suf, mid = llama_cpp.llama_vocab_fim_pre(v), llama_cpp.llama_vocab_fim_suf(v), llama_cpp.llama_vocab_fim_mid(v)
    prefix = [pre] + llm.tokenize(job["prefix"].encode(), add_bos=False, special=False)
    suffix = [suf] + llm.tokenize(job["suffix"].encode(), add_bos=False, special=False)
    bos = [llama_cpp.llama_vocab_bos(v)] if llama_cpp.llama_vocab_get_add_bos(v) else []
    psm, spm = bos + prefix + suffix + [mid], bos + suffix + prefix + [mid]
    eog = [i for i in range(llama_cpp.llama_vocab_n_tokens(v)) if llama_cpp.llama_vocab_is_eog(v, i)]
    print(json.dumps({"fim": [pre, suf, mid], "psm": psm, "spm": spm, "eog": eog}))
    sys.exit(0)
llm = llama_cpp.Llama(model_path=job["model"], n_ctx=job["n_ctx"], logits_all=True, n_threads=2, verbose=False,
                      lora_path=job.get("lora"), lora_scale=job.get("lora_scale", 1.0))
ids = job["tokens"] if job["tokens"] is not None else llm.tokenize(job["text"].encode(), add_bos=True)
llm.eval(ids)
np.savez(job["out"], tokens=np.asarray(ids, np.int32), logits=np.asarray(llm.scores[:len(ids)], np.float32))
"""


def llama_cpp_tool(name: str) -> Path | None:
    """A tool tools/build_llama_cpp.sh built (tools/test.sh builds llama-imatrix and
    llama-quantize), from the same vendored llama.cpp as the sdist; None if absent."""
    exe = cache_dir() / "llama.cpp" / "build" / "bin" / name
    return exe if exe.is_file() else None


def have_llama_cpp() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def _child(job: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _CHILD, json.dumps(job)], capture_output=True, text=True, timeout=900)


def llama_cpp_schema_gbnf(schema: dict) -> str:
    """llama.cpp's JSON-schema-to-GBNF conversion (llama-cpp-python's
    LlamaGrammar.from_json_schema), as GBNF text."""
    r = _child({"op": "schema_gbnf", "schema": json.dumps(schema)})
    if r.returncode != 0:
        raise RuntimeError(f"LlamaGrammar.from_json_schema failed with {r.returncode}: {r.stderr[-2000:]}")
    return r.stdout


def llama_cpp_tokenize(model: Path, texts: list[str], add_bos: bool, special: bool) -> list[list[int]]:
    """llama.cpp's token ids of each text (llama_tokenize with add_special=add_bos, parse_special=special)"""
    r = _child({"op": "tokenize", "model": str(model), "texts": texts, "add_bos": add_bos, "special": special})
    if r.returncode != 0:
        raise RuntimeError(f"llama.cpp's tokenizer on {model} failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def llama_cpp_infill(model: Path, prefix: str, suffix: str) -> dict:
    """llama.cpp's FIM token ids ("fim": [pre, suf, mid], -1 where absent),
    its infill prompts for prefix/suffix in PSM and SPM order, and its
    end-of-generation ids ("eog")."""
    r = _child({"op": "infill", "model": str(model), "prefix": prefix, "suffix": suffix})
    if r.returncode != 0:
        raise RuntimeError(f"llama.cpp's infill prompt for {model} failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def llama_quantize(src: Path, dst: Path, ftype: int, threads: int = 2, allow_requantize: bool = False) -> None:
    """llama-quantize [--allow-requantize] SRC DST FTYPE through llama-cpp-python's
    binding; its output is cached under SRC's bytes and the arguments (the
    thread count does not change the bytes), then copied to DST."""

    def quantize(tmp: Path) -> None:
        job = {"op": "quantize", "src": str(src), "dst": str(tmp), "ftype": ftype, "threads": threads}
        r = _child(job | {"allow_requantize": allow_requantize})
        if r.returncode != 0:
            raise RuntimeError(f"llama_model_quantize({src}, {ftype}) failed with {r.returncode}: {r.stderr[-2000:]}")

    key = oracle_key(importlib.metadata.version("llama_cpp_python"), src, ftype, allow_requantize)
    shutil.copyfile(cached_file("quantize", f"ftype{ftype}.gguf", key, quantize), dst)


def llama_cpp_logits(
    model: Path,
    text: str | None = None,
    tokens: list[int] | None = None,
    n_ctx: int = 512,
    lora: Path | None = None,
    lora_scale: float = 1.0,
) -> tuple[list[int], np.ndarray]:
    """llama.cpp's tokens (text tokenized with BOS, or the given ids) and the
    logits f32 [n_tokens, n_vocab] of every position (with a LoRA adapter
    at lora_scale when lora is given)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "logits.npz"
        r = _child(
            {
                "op": "logits",
                "model": str(model),
                "text": text,
                "tokens": tokens,
                "n_ctx": n_ctx,
                "out": str(out),
                "lora": None if lora is None else str(lora),
                "lora_scale": lora_scale,
            }
        )
        if r.returncode != 0:
            raise RuntimeError(f"llama.cpp on {model} failed: {r.stderr[-2000:]}")
        with np.load(out) as z:
            return z["tokens"].tolist(), z["logits"]


def llama_cpp_embeddings(
    model: Path, texts: list[str], pooling: int, n_ctx: int = 128
) -> tuple[list[list[int]], np.ndarray]:
    """llama.cpp's tokens of each text (with its special tokens) and its pooled,
    unnormalized embeddings f32 [n_texts, n_embd] (llama-cpp-python's embedding
    mode; pooling: llama.cpp's id, 1 mean, 2 cls)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "embd.npz"
        job = {"op": "embed", "model": str(model), "texts": texts, "pooling": pooling, "n_ctx": n_ctx, "out": str(out)}
        r = _child(job)
        if r.returncode != 0:
            raise RuntimeError(f"llama.cpp embeddings on {model} failed: {r.stderr[-2000:]}")
        with np.load(out) as z:
            return [z[f"tokens{i}"].tolist() for i in range(len(texts))], z["vectors"]
