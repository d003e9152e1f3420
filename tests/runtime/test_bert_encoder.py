"""Encoder models (bert) end to end on random tiny checkpoints
(tests/support/tiny_bert.py) converted by `lamina convert`:

- embeddings (Llama(embedding=True).embed) against transformers' BertModel
  pooled as sentence-transformers pools (mean over the tokens, or the CLS
  row) and L2-normalized: cosine >= 0.9999, nmse < 1e-4;
- the native forward pass against the numpy reference (encoder_forward) on
  the same file, with both token types;
- rerank scores against transformers' BertForSequenceClassification on the
  same (query, document) pairs, token types 0/1 as its tokenizer makes them.
  llama.cpp's converter drops BERT's pooler (bert.pooler.dense), so the file
  scores classifier(h_CLS); the oracle is that head of the transformers
  model, not its pooler + classifier logits;
- llama.cpp (llama-cpp-python's embedding mode, in a child process) on the
  same file: the same tokens and the same embeddings;
- what an encoder cannot do is a clear error.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from lamina import Llama
from lamina.convert.encode import Encoder
from lamina.convert.hf.convert import plan_hf
from lamina.convert.pipeline import run_job
from lamina.convert.recipes import get_mix
from lamina.engine.encoder import EncoderError, EncoderModel
from lamina.engine.reference import encoder_forward, load_reference_weights
from lamina.generation import open_session
from support.llama_cpp_ref import have_llama_cpp, llama_cpp_embeddings
from support.tiny_bert import cached_tiny_bert

TEXTS = [
    "Hello, World! This is a short sentence.",
    "naïve café RÉSUMÉ: accents are stripped with lowercase",
    "我想在apple工作1314151天 and then some English",
    "don't stop--now... (really?) $5.00 + 3% = [x]",
    "a",
]
QUERY = "what is the giant panda?"
DOCS = [
    "The giant panda is a bear species endemic to China.",
    "Paris is the capital of France.",
    "Pandas eat bamboo; they are black and white.",
    "1 2 3 4 5",
]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory):
    """kind -> (checkpoint folder, {mix: converted file})"""
    enc = Encoder(2)
    out = {}
    try:
        for kind in ("mean", "cls", "rerank"):
            hf = cached_tiny_bert(kind)
            gguf = {}
            for mix in ("f32", "q8_0") if kind == "rerank" else ("f32",):
                gguf[mix] = tmp_path_factory.mktemp("gguf") / f"bert-{kind}-{mix}.gguf"
                run_job(plan_hf(hf, get_mix(mix), enc, gguf[mix]))
            out[kind] = (hf, gguf)
    finally:
        enc.close()
    return out


def _metrics(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    cos = float(got @ want / np.linalg.norm(got) / np.linalg.norm(want))
    nmse = float(((got - want) ** 2).mean() / (want**2).mean())
    return cos, nmse


@pytest.mark.parametrize("kind", ["mean", "cls"])
def test_embeddings_match_transformers(kind: str, files) -> None:
    import torch
    from transformers import AutoTokenizer, BertModel

    hf_dir, gguf = files[kind]
    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = BertModel.from_pretrained(hf_dir, add_pooling_layer=False).eval()
    with Llama(str(gguf["f32"]), embedding=True, verbose=False) as llm:
        for text in TEXTS:
            enc = tok(text, return_tensors="pt")
            with torch.no_grad():
                h = model(**enc).last_hidden_state[0].double().numpy()  # [T, E]
            want = h.mean(axis=0) if kind == "mean" else h[0]
            want /= np.linalg.norm(want)
            assert llm.tokenize(text.encode(), special=True) == enc["input_ids"][0].tolist()
            got = np.asarray(llm.embed(text, normalize=True))
            cos, nmse = _metrics(got, want)
            assert cos >= 0.9999 and nmse < 1e-4, (text, cos, nmse)
        # pooling_type overrides the file's: the CLS row of the mean model, per token rows for none
    with Llama(str(gguf["f32"]), embedding=True, pooling_type=0, verbose=False) as llm:
        rows = np.asarray(llm.embed(TEXTS[0]))
        assert rows.shape == (len(tok(TEXTS[0])["input_ids"]), 64)


def test_create_embedding_shape(files) -> None:
    with Llama(str(files["mean"][1]["f32"]), embedding=True, verbose=False) as llm:
        out = llm.create_embedding(TEXTS[:2])
        assert [d["index"] for d in out["data"]] == [0, 1] and len(out["data"][0]["embedding"]) == 64
        assert out["usage"]["prompt_tokens"] == sum(len(llm.tokenize(t.encode(), special=True)) for t in TEXTS[:2])


@pytest.mark.parametrize("mix", ["f32", "q8_0"])
def test_native_matches_numpy_reference(mix: str, files) -> None:
    m = EncoderModel.load(files["rerank"][1][mix], n_threads=2)
    try:
        W = load_reference_weights(m.gguf)
        tokens = np.random.default_rng(3).integers(0, m.n_vocab, 48)
        types = (np.arange(48) >= 20).astype(np.int32)
        want = encoder_forward(m.hparams, W, tokens, types)
        got = m.hidden(tokens, types)
        nmse = float(((got - want) ** 2).mean() / (want**2).mean())
        assert nmse < (1e-10 if mix == "f32" else 2e-4), nmse  # q8_0: activations quantized too
        with pytest.raises(EncoderError, match="token type 2 at position 0"):
            m.hidden([101, 102], [2, 0])
        with pytest.raises(EncoderError, match="more than the model's 128 positions"):
            m.hidden(list(range(129)))
    finally:
        m.close()


def test_rerank_matches_transformers(files) -> None:
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    hf_dir, gguf = files["rerank"]
    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = BertForSequenceClassification.from_pretrained(hf_dir).eval()
    want = []
    for doc in DOCS:
        enc = tok(QUERY, doc, return_tensors="pt")
        with torch.no_grad():
            h = model.bert(**enc).last_hidden_state[0, 0]
            want.append(float(model.classifier(h)[0]))
    assert np.std(want) > 0.05, "scores too close to tell documents apart"
    with Llama(str(gguf["f32"]), embedding=True, verbose=False) as llm:
        results = llm.rerank(QUERY, DOCS)
        assert sorted(r["index"] for r in results) == list(range(len(DOCS)))
        got = {r["index"]: r["relevance_score"] for r in results}
        np.testing.assert_allclose([got[i] for i in range(len(DOCS))], want, rtol=1e-4, atol=1e-5)
        assert [r["index"] for r in results] == list(np.argsort(want)[::-1])
        assert llm.rerank(QUERY, DOCS, top_n=2) == results[:2]
        with pytest.raises(ValueError, match="top_n=0"):
            llm.rerank(QUERY, DOCS, top_n=0)


@pytest.mark.skipif(not have_llama_cpp(), reason="llama-cpp-python is not installed")
def test_llama_cpp_agrees(files) -> None:
    gguf = files["mean"][1]["f32"]
    tokens, theirs = llama_cpp_embeddings(gguf, TEXTS, pooling=1)
    with Llama(str(gguf), embedding=True, verbose=False) as llm:
        for text, toks, v in zip(TEXTS, tokens, theirs):
            assert llm.tokenize(text.encode(), special=True) == toks
            cos, nmse = _metrics(np.asarray(llm.embed(text)), v.astype(np.float64))
            assert cos >= 0.9999 and nmse < 1e-4, (text, cos, nmse)  # llama.cpp's GELU is the tanh form


def test_what_an_encoder_cannot_do(files) -> None:
    gguf = str(files["mean"][1]["f32"])
    with Llama(gguf, embedding=True, verbose=False) as llm:
        with pytest.raises(EncoderError, match=r"encoder model \(bert\).*create_completion\(\) needs a model"):
            llm.create_completion("Hello")
        with pytest.raises(EncoderError, match="create_chat_completion"):
            llm.create_chat_completion([{"role": "user", "content": "Hi"}])
        with pytest.raises(EncoderError, match="not a reranking model"):
            llm.rerank(QUERY, DOCS)
        with pytest.raises(ValueError, match="exceed context window of 128"):
            llm.embed("word " * 200, truncate=False)
        assert len(llm.embed("word " * 200)) == 64  # truncated to the position table
    with Llama(gguf, verbose=False) as llm, pytest.raises(RuntimeError, match="embedding=True"):
        llm.embed("x")
    with pytest.raises(EncoderError, match="does not generate"):
        open_session(gguf)
    with pytest.raises(EncoderError, match="chat_template"):
        Llama(gguf, chat_template="{{ x }}", verbose=False)


def test_run_command_refuses_an_encoder(files) -> None:
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "lamina", "run", str(files["rerank"][1]["f32"]), "-p", "Hello", "-n", "4"]
    ran = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert ran.returncode != 0 and "does not generate" in ran.stderr and "Traceback" not in ran.stderr
