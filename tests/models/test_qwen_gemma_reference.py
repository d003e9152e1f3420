"""The native forward on the real Qwen2.5-Coder-0.5B-Instruct and Gemma-3-270M
Q4_K_M GGUFs against transformers running the same GGUF (dequantized to
float32), every position of each prompt (teacher forcing).

Prompts are real text (prose, code, a chat turn in the model's own format),
tokenized by lamina's tokenizer (tested against llama.cpp and HF elsewhere),
plus one long prompt per model: 700 Gemma tokens, past its 512-token sliding
window, and 1,100 Qwen tokens, each evaluated in several batches.

What differs is activation quantization: like llama.cpp, the native dots
quantize activations to Q8_0 / Q8_K blocks, transformers multiplies in
float32. On Gemma the input of ffn_down (GELU(gate) * up, with outliers, in
256-wide Q8_K blocks) carried most of that error: with one pass, as llama.cpp
does it, lamina agreed with transformers on 90.7-95.7% of short-prompt
positions (llama.cpp on the same tokens: 94.7%, and lamina vs llama.cpp
93.8-95.5%). gemma3 therefore quantizes that input twice (value + residual,
lamina.h two_pass_down): 97-100%, nmse 3e-4..8e-4 (was 0.9e-3..2.5e-3). The
float64 numpy reference (no activation quantization) equals transformers to
1e-12 nmse on Gemma, which pins the architecture itself (sliding layers, rope
bases, attention scale, norms, GELU).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="transformers reference needs torch (pip install torch==2.13.0)")
transformers = pytest.importorskip("transformers", reason="transformers is not installed")

from lamina.engine.context import Context, Model  # noqa: E402
from lamina.engine.loader import read_hparams  # noqa: E402
from lamina.gguf.reader import GGUFFile  # noqa: E402
from lamina.model_cache import fetch_model  # noqa: E402
from lamina.tokenizer.tokenizer import Tokenizer  # noqa: E402
from support.paths import DATA  # noqa: E402
from support.transformers_ref import TransformersGGUF  # noqa: E402

MODELS = ("qwen2.5-coder-0.5b", "gemma-3-270m")

CODE = '''def merge_sorted(a, b):
    """Merge two sorted lists into one sorted list."""
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        if a[i] <= b[j]:
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    return out + a[i:] + b[j:]
'''
QUESTION = "Write a Python function that checks whether a string is a palindrome."
CHAT = {
    "qwen2": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    + QUESTION
    + "<|im_end|>\n<|im_start|>assistant\n",
    "gemma3": "<start_of_turn>user\n" + QUESTION + "<end_of_turn>\n<start_of_turn>model\n",
}
LONG_TOKENS = {"qwen2": 1100, "gemma3": 700}  # gemma: past its 512-token sliding window

# Where the native top-1 differs from transformers', transformers rates the
# native pick within this many logits of its own best. Measured on these
# prompts: Qwen <= 0.3, Gemma <= 0.17 on the short prompts and 0.91 at one
# position of the 700-token one. The logits of these models span ~30-40, so
# 1.0 is still a near-tie and far below what a wrong mask, rope base or
# attention scale gives (several logits).
NEAR_TIE = 1.0

# Pooled top-1 over the three short prompts. Measured: Qwen 96-100%, Gemma
# prose 98.1%, code 97.4%, chat 100%.
MIN_TOP1_SHORT = {"qwen2": 0.95, "gemma3": 0.95}


def _alice() -> str:
    return (DATA / "alice29.txt").read_text(encoding="latin-1")


class Case:
    """One model: the native model, transformers on the same GGUF, the tokenizer."""

    def __init__(self, name: str):
        self.path = fetch_model(name)
        with GGUFFile(self.path) as g:
            self.arch = read_hparams(g).arch
            self.tok = Tokenizer.from_metadata(g.metadata)
        self.native = Model.load(self.path, n_threads=2)
        self.hf = TransformersGGUF(self.path)

    def prompts(self) -> dict[str, list[int]]:
        text = _alice()
        return {
            "prose": self.tok.encode(text[5000:5600]),
            "code": self.tok.encode(CODE),
            "chat": self.tok.encode(CHAT[self.arch], special=True),
        }

    def long_prompt(self) -> list[int]:
        ids = self.tok.encode(_alice()[20000:40000])[: LONG_TOKENS[self.arch]]
        assert len(ids) == LONG_TOKENS[self.arch]
        return ids

    def compare(self, ids: list[int], n_batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
        got = Context(self.native, n_ctx=len(ids) + 8, n_batch=n_batch).eval(ids, all_logits=True)
        return got, self.hf.logits(ids)


@pytest.fixture(scope="module", params=MODELS)
def case(request):
    return Case(request.param)


def _stats(got: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    same = got.argmax(axis=1) == ref.argmax(axis=1)
    nmse = float(((got - ref) ** 2).mean() / (ref**2).mean())
    gap = ref.max(axis=1) - ref[np.arange(len(ref)), got.argmax(axis=1)]  # how far transformers rates our pick
    return same, nmse, gap


def test_prompts_match_transformers(case):
    agree = []
    for name, ids in case.prompts().items():
        got, ref = case.compare(ids, n_batch=64)  # several batches: the KV cache carries over
        same, nmse, gap = _stats(got, ref)
        print(
            f"\n{case.arch} {name}: {len(ids)} positions, top-1 {same.mean():.3f}, nmse {nmse:.2e}, "
            f"max gap {gap.max():.3f}"
        )
        assert nmse < 5e-3, name
        assert gap.max() <= NEAR_TIE, name
        agree.append(same)
    assert np.concatenate(agree).mean() >= MIN_TOP1_SHORT[case.arch]


def test_long_prompt_matches_transformers(case):
    """Gemma past its sliding window, Qwen past 1,000 tokens: every position
    agrees, the ones beyond the window included."""
    ids = case.long_prompt()
    got, ref = case.compare(ids, n_batch=256)
    same, nmse, gap = _stats(got, ref)
    window = read_hparams(GGUFFile(case.path)).layers[0].sliding_window
    print(
        f"\n{case.arch} long: {len(ids)} positions (window {window}), top-1 {same.mean():.3f}, nmse {nmse:.2e}, "
        f"max gap {gap.max():.3f}"
    )
    assert nmse < 5e-3
    assert gap.max() <= NEAR_TIE
    assert same.mean() >= 0.95
    if window:
        tail = slice(window, None)  # queries whose window excludes the first keys
        assert same[tail].mean() >= 0.95
        assert float(((got[tail] - ref[tail]) ** 2).mean() / (ref[tail] ** 2).mean()) < 5e-3


def test_embeddings_match_transformers(case):
    """Mean-pooled, normalized embeddings of each prompt: the native hidden
    states (output_norm(x)) against transformers' last_hidden_state, which is
    after the final norm in both architectures."""
    from lamina.engine.embeddings import embed_tokens, l2_normalize

    for name, ids in case.prompts().items():
        ctx = Context(case.native, n_ctx=len(ids) + 8, n_batch=64)
        got = embed_tokens(ctx, 0, ids, "mean")
        hidden = case.hf.hidden(ids)  # [T, n_embd]
        want = l2_normalize(hidden.mean(axis=0))
        cos = float(np.dot(got, want))
        print(f"\n{case.arch} {name}: cosine {cos:.6f}")
        assert cos > 0.999, name
