"""Write the seed corpora of tests/fuzz/corpus/ (committed; rerun after a
format change):  python tests/fuzz/make_corpus.py

Seeds come from real files: the headers of the three real models cut to a
few KiB, the sample and raw files of tests/support/gguf_builders.py with the
lies tests/runtime/test_gguf_corrupt.py tells, a whole tiny model; real chat
templates; real block bytes of each type; request bodies the server accepts."""

from __future__ import annotations

import hashlib
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gguf import GGMLQuantizationType as T  # noqa: E402
from gguf import GGUFValueType as V  # noqa: E402

from support.gguf_builders import (  # noqa: E402
    gguf_bytes,
    gguf_str,
    good_raw_parts,
    kv,
    kv_array,
    kv_u32,
    tensor_info,
    write_sample_gguf,
)

CORPUS = HERE / "corpus"
REAL_MODELS = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b", "gemma-3-270m")
HEADER_BYTES = 4096


def put(target: str, data: bytes, name: str | None = None) -> None:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / (name or hashlib.sha1(data).hexdigest()[:16])).write_bytes(data)


def real_model_paths() -> list[Path]:
    from lamina.model_cache import cached_model

    paths = [cached_model(name) for name in REAL_MODELS]
    return [p for p in paths if p is not None]


def gguf_seeds() -> None:
    for path in real_model_paths():
        with open(path, "rb") as f:
            put("gguf", f.read(HEADER_BYTES), f"header-{path.stem[:40]}")
    with tempfile.TemporaryDirectory() as tmp:
        put("gguf", write_sample_gguf(Path(tmp) / "s.gguf").read_bytes(), "sample")
        put("gguf", tiny_model(Path(tmp) / "t.gguf").read_bytes(), "tiny-llama-q8_0")
    kvs, infos, data = good_raw_parts()
    put("gguf", gguf_bytes(kvs, infos, data), "good-raw")
    lies = {
        "lying-tensor-count": gguf_bytes(kvs, infos, data, n_tensors=2**40),
        "lying-kv-count": gguf_bytes(kvs, infos, data, n_kv=2**62),
        "huge-key-length": gguf_bytes([gguf_str("k", 2**60) + b"k"], infos, data),
        "huge-array": gguf_bytes([kv_array("a", V.UINT32, 2**40, b"\0" * 8)], infos, data),
        "nested-array": gguf_bytes([kv_array("a", V.ARRAY, 1, b"")], infos, data),
        "bool-2": gguf_bytes([kv("b", V.BOOL, b"\x02")], infos, data),
        "alignment-3": gguf_bytes([*kvs, kv_u32("general.alignment", 3)], infos, data),
        "int64-overflow": gguf_bytes(kvs, [tensor_info("a", [2**32, 2**32], T.F32, 0)], data),
        "tensor-2^60": gguf_bytes(kvs, [tensor_info("a", [2**30, 2**30], T.F32, 0)], data),
        "overlap": gguf_bytes(kvs, [tensor_info("a", [8], T.F32, 0), tensor_info("b", [8], T.F32, 0)], data),
        "past-end": gguf_bytes(kvs, [tensor_info("a", [8], T.F32, 2**40)], data),
        "v1": gguf_bytes(kvs, infos, data, version=1),
    }
    for name, blob in lies.items():
        put("gguf", blob, name)


def tiny_model(path: Path) -> Path:
    """A whole loadable model in a few KiB: 1 layer, 32 wide, Q8_0, an SPM vocabulary."""
    from support.tiny_models import TinyConfig, write_tiny_model

    tokens = ["<unk>", "<s>", "</s>", *"abcdefghijklmnopqrstuvwxyz ", "\u2581", "<0x0A>"][:32]

    def vocab(w) -> None:
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores([-float(i) for i in range(len(tokens))])
        w.add_token_types([2, 3, 3, *[1] * (len(tokens) - 3)])
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_chat_template("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}")

    cfg = TinyConfig(n_vocab=32, n_embd=32, n_layer=1, n_ff=32, n_head=2, n_head_kv=1, qtype="Q8_0", n_ctx_train=64)
    return write_tiny_model(path, cfg, extra=vocab)


def _dict_entry(data: bytes) -> str:
    return '"' + "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\x{b:02x}" for b in data) + '"'


def gguf_dict() -> None:
    """libFuzzer dictionary: the magic, every key the real models and lamina's
    loader use (bare and length-prefixed), value and ggml type ids, sizes that lie."""
    from gguf import Keys

    keys: set[str] = set()
    for group in (Keys.General, Keys.LLM, Keys.Attention, Keys.Rope, Keys.Tokenizer):
        keys |= {v for k, v in vars(group).items() if not k.startswith("_") and isinstance(v, str)}
    keys = {
        k.replace("{arch}", arch)
        for k in keys
        for arch in ("llama", "gemma3", "qwen2")
        if "{" not in k.replace("{arch}", "")
    }
    entries = [b"GGUF", *(k.encode() for k in keys), *(gguf_str(k) for k in sorted(keys)[:80])]
    entries += [struct.pack("<I", int(v)) for v in V] + [struct.pack("<I", int(t)) for t in T]
    entries += [struct.pack("<Q", n) for n in (0, 1, 32, 2**31, 2**32, 2**40, 2**60, 2**63 - 1, 2**64 - 1)]
    lines = [f"{_dict_entry(e)}" for e in sorted(set(entries))]
    (HERE / "dict").mkdir(exist_ok=True)
    (HERE / "dict" / "gguf.dict").write_text(
        "# GGUF keys, type ids and lying sizes (make_corpus.py)\n" + "\n".join(lines) + "\n"
    )


def tokenizer_seeds() -> None:
    """The texts tokenizer tests run over, each behind the two bytes that pick
    the model and the mode (atheris' FuzzedDataProvider reads them first)."""
    from support.tokenizer_corpus import CORPUS as TEXTS

    for i, text in enumerate(TEXTS):
        if text:
            put("tokenizer", bytes([i % 3, (i // 3) % 4]) + text.encode(), f"text-{i:03d}")
    put("tokenizer", bytes([2, 1]) + b"<start_of_turn>user\nhi<end_of_turn>", "gemma-turn")
    put("tokenizer", bytes([1, 1]) + b"<|im_start|>user\nhi<|im_end|>", "qwen-turn")
    put("tokenizer", bytes([0, 2, 0xFF, 0xC3, 0x28, 0xE2, 0x82]), "invalid-utf8")


def chat_template_seeds() -> None:
    """The three real models' templates (and lamina's built-in ones) with a short conversation."""
    from lamina.chat_template import CHATML_TEMPLATE, GEMMA3_TEMPLATE
    from lamina.gguf.reader import GGUFFile

    conversation = b"\0\x00be brief\0\x01hi\0\x02hello\0\x01and you?"
    templates = {"chatml": CHATML_TEMPLATE, "gemma3-builtin": GEMMA3_TEMPLATE}
    for path in real_model_paths():
        with GGUFFile(path) as f:
            source = f.get("tokenizer.chat_template")
        if isinstance(source, str):
            templates[path.stem[:40]] = source
    for name, source in templates.items():
        put("chat_template", source.encode() + conversation, name)
    put("chat_template", b"{{ 'x' * 1000000000 }}\0\x01hi", "crash-string-times-a-billion")
    put(
        "chat_template",
        b"{% set ns = namespace(x='ab') %}{% for i in range(40) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}\0",
        "crash-concat-doubling",
    )


def chat_template_dict() -> None:
    words = [
        "{{",
        "}}",
        "{%",
        "%}",
        "{#",
        "#}",
        "for",
        "in",
        "endfor",
        "if",
        "elif",
        "else",
        "endif",
        "set",
        "macro",
        "endmacro",
        "namespace",
        "messages",
        "message",
        "['role']",
        "['content']",
        "loop.index0",
        "loop.first",
        "add_generation_prompt",
        "raise_exception(",
        "bos_token",
        "eos_token",
        "tools",
        "tojson",
        "|",
        "~",
        "*",
        "**",
        "%",
        "+",
        "range(",
        "[1:]",
        ".format(",
        "__class__",
        "__init__",
        "__globals__",
        "mro()",
        "attr(",
        "strftime_now(",
        "generation",
        "endgeneration",
        "break",
        "continue",
        "recursive",
        "loop(",
        "namespace(",
    ]
    (HERE / "dict").mkdir(exist_ok=True)
    (HERE / "dict" / "chat_template.dict").write_text("\n".join(_dict_entry(w.encode()) for w in words) + "\n")


def quants_seeds() -> None:
    """Real blocks: the first bytes of each type's tensors in the sample file and the real models."""
    from lamina import quants
    from lamina.gguf.reader import GGUFFile

    types = [t for t in T if quants.can_run(t)]
    seen: set[int] = set()
    for path in real_model_paths():
        with GGUFFile(path) as f:
            for t in f.tensors:
                if t.ggml_type in types and int(t.ggml_type) not in seen:
                    seen.add(int(t.ggml_type))
                    head = bytes([types.index(t.ggml_type), 1, 0])
                    put("quants", head + bytes(f.tensor_bytes(t.name).reshape(-1)[: 2 * t.type_size]), t.ggml_type.name)
    rng = np.random.default_rng(0)
    for i, t in enumerate(types):
        if int(t) not in seen:
            put(
                "quants",
                bytes([i, 0, 0]) + rng.integers(0, 256, quants.block_bytes(t), dtype=np.uint8).tobytes(),
                t.name,
            )


def server_seeds() -> None:
    """A few fuzz inputs; the JSON bodies are built from the bytes, so any bytes make a request."""
    rng = np.random.default_rng(0)
    for i in range(8):
        put("server", bytes([i % 6]) + rng.integers(0, 256, 64, dtype=np.uint8).tobytes(), f"random-{i}")


def main() -> None:
    targets = sys.argv[1:] or ["gguf"]
    for target in targets:
        for old in (CORPUS / target).glob("*"):
            if not old.name.startswith("crash-"):  # regressions stay
                old.unlink()
        globals()[f"{target}_seeds"]()
        if f"{target}_dict" in globals():
            globals()[f"{target}_dict"]()
    total = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    print(f"corpus: {total} bytes")


if __name__ == "__main__":
    main()
