"""The native forward on the real SmolLM2-135M-Instruct Q4_1 against
transformers running the same GGUF (dequantized to float32), position by
position (teacher forcing).

Prompts are spelled in the GGUF vocabulary itself (whole-word pieces, 'Ġ'
marking a leading space), so no tokenizer is involved. The native side
quantizes activations to Q8_1/Q8_0 for its dots while transformers multiplies
in float32, so logits differ a little; the argmax must almost never."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="transformers reference needs torch (pip install torch==2.13.0)")
transformers = pytest.importorskip("transformers", reason="transformers is not installed")

from lamina.engine.context import Context, Model  # noqa: E402
from lamina.gguf.reader import GGUFFile  # noqa: E402
from lamina.model_cache import fetch_model  # noqa: E402
from support.transformers_ref import TransformersGGUF  # noqa: E402

PROMPTS = {
    "prose": "The quick brown fox jumps over the lazy dog . In the morning , the farmer went to the market to "
    "sell his apples and buy some bread for his family . He was happy because the weather was nice",
    "chat": "<|im_start|> system \n You are a helpful assistant . <|im_end|> \n <|im_start|> user \n What is the "
    "capital of France ? <|im_end|> \n <|im_start|>",
}


def spell(vocab: dict[str, int], text: str) -> list[int]:
    """Whole words as vocabulary pieces: 'Ġword' after a space, 'word' at a line start."""
    ids, line_start = [], True
    for word in text.split(" "):
        if word == "\n":
            ids.append(vocab["Ċ"])
            line_start = True
        elif word.startswith("<|"):
            ids.append(vocab[word])
            line_start = True
        else:
            ids.append(vocab[word if line_start else "Ġ" + word])
            line_start = False
    return ids


@pytest.fixture(scope="module")
def path():
    return fetch_model("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def prompts(path):
    with GGUFFile(path) as g:
        vocab = {piece: i for i, piece in enumerate(g.get("tokenizer.ggml.tokens"))}
    out = {name: spell(vocab, text) for name, text in PROMPTS.items()}
    out["random"] = np.random.default_rng(7).integers(0, len(vocab), 48).tolist()
    return out


@pytest.fixture(scope="module")
def hf_model(path):
    return TransformersGGUF(path)


@pytest.fixture(scope="module")
def native(path):
    return Model.load(path, n_threads=2)


def hf_logits(model: TransformersGGUF, ids: list[int]) -> np.ndarray:
    return model.logits(ids)


@pytest.fixture(scope="module")
def compared(hf_model, native, prompts):
    """name -> (native logits, transformers logits), every position of each prompt."""
    out = {}
    for name, ids in prompts.items():
        got = Context(native, n_ctx=256, n_batch=16).eval(ids, all_logits=True)  # several chunks
        out[name] = got, hf_logits(hf_model, ids)
    return out


def test_logits_match_transformers(compared):
    agree = []
    for name, (got, ref) in compared.items():
        same = got.argmax(axis=1) == ref.argmax(axis=1)
        max_abs = float(np.abs(got - ref).max())
        nmse = float(((got - ref) ** 2).mean() / (ref**2).mean())
        print(
            f"\n{name}: {len(same)} positions, top-1 agreement {same.mean():.3f}, max |diff| {max_abs:.3f}, "
            f"nmse {nmse:.2e}"
        )
        assert nmse < 1e-2
        assert max_abs < 0.1 * np.abs(ref).max()
        agree.append(same)
    assert np.concatenate(agree).mean() >= 0.95


def test_top1_differs_only_at_near_ties(compared):
    """Where the argmax differs, transformers itself rates the native pick
    within half a logit of its own (activation quantization noise)."""
    for name, (got, ref) in compared.items():
        picked = ref[np.arange(len(ref)), got.argmax(axis=1)]
        assert np.all(picked >= ref.max(axis=1) - 0.5), name


def test_numpy_reference_matches_transformers(hf_model, path, prompts):
    """Without activation quantization the forward is the same function: the
    float64 numpy reference on the dequantized GGUF equals transformers."""
    from lamina.engine.loader import read_hparams
    from lamina.engine.reference import forward, load_reference_weights

    ids = prompts["chat"]
    with GGUFFile(path) as g:
        ref = forward(read_hparams(g), load_reference_weights(g), ids)
    hf = hf_logits(hf_model, ids)
    assert np.abs(ref - hf).max() < 1e-3 * np.abs(hf).max()


def test_decode_continues_like_teacher_forcing(hf_model, native, prompts):
    """Prefill half the prompt, then decode token by token: same logits as transformers."""
    ids = prompts["prose"]
    ctx = Context(native, n_ctx=256)
    half = len(ids) // 2
    rows = [ctx.eval(ids[:half], all_logits=True)] + [ctx.eval([t])[None] for t in ids[half:]]
    got, ref = np.concatenate(rows), hf_logits(hf_model, ids)
    picked = ref[np.arange(len(ref)), got.argmax(axis=1)]
    assert np.all(picked >= ref.max(axis=1) - 0.5)
    assert float(((got - ref) ** 2).mean() / (ref**2).mean()) < 1e-2
