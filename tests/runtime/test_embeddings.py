"""Embeddings: the native hidden states (Context.decode_embd) against the numpy
reference's output_norm(x), the pooling and normalization of
lamina.engine.embeddings, Llama.embed / create_embedding in llama-cpp-python's
shapes, and embeddings taken while generations stream on the same engine."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from lamina import Llama
from lamina.engine.context import Context, ContextError, Model
from lamina.engine.embeddings import embed_tokens, l2_normalize, pool, pooling_from_metadata
from lamina.engine.loader import read_hparams
from lamina.engine.reference import forward, load_reference_weights
from lamina.gguf.reader import GGUFFile
from lamina.model_cache import fetch_model
from lamina.sampling import Sampler, SamplingParams
from support.tiny_models import CONFIGS


def reference_hidden(path, tokens) -> np.ndarray:
    with GGUFFile(path) as g:
        return forward(read_hparams(g), load_reference_weights(g), tokens, hidden=True)


@pytest.mark.parametrize("name", ["llama", "qwen2", "gemma3"])
def test_hidden_states_match_the_reference(tiny, name):
    cfg = CONFIGS[name]
    toks = np.random.default_rng(5).integers(0, cfg.n_vocab, 19)
    ref = reference_hidden(tiny(cfg), toks)  # [19, n_embd]
    ctx = Context(Model.load(tiny(cfg), n_threads=2), n_ctx=64, n_batch=8, kv_type="f32", n_seq_max=2)
    rows = []
    for s in range(0, 19, 8):  # three batches: the cache carries the earlier ones
        chunk = toks[s : s + 8]
        seq = np.ones(len(chunk), np.int32)  # sequence 1: any sequence works
        rows.append(ctx.decode_embd(chunk, np.arange(s, s + len(chunk)), seq, np.ones(len(chunk), bool)))
    got = np.concatenate(rows)
    assert got.shape == ref.shape
    assert float(np.abs(got - ref).max() / np.abs(ref).max()) < 1e-4
    assert ctx.seq_len(1) == 19  # cached like decode: a generation could continue from here


def test_hidden_rows_times_the_head_are_the_logits(tiny):
    """decode_embd's rows are what the output head multiplies: the same batch
    through decode gives hidden @ W_out^T."""
    cfg = CONFIGS["llama"]
    toks = np.random.default_rng(6).integers(0, cfg.n_vocab, 9)
    model = Model.load(tiny(cfg), n_threads=2)
    with GGUFFile(tiny(cfg)) as g:
        w = load_reference_weights(g)
    head = w["token_embd.weight"] if "output.weight" not in w else w["output.weight"]
    a = Context(model, n_ctx=32, kv_type="f32")
    b = Context(model, n_ctx=32, kv_type="f32")
    pos, seq, mask = np.arange(9), np.zeros(9, np.int32), np.arange(9) % 3 == 0  # rows 0, 3, 6
    hidden = a.decode_embd(toks, pos, seq, mask)  # [3, n_embd]
    logits = b.decode(toks, pos, seq, mask)  # [3, n_vocab]
    assert hidden.shape == (3, cfg.n_embd)
    ref = hidden.astype(np.float64) @ head.T.astype(np.float64)
    assert float(np.abs(logits - ref).max() / np.abs(ref).max()) < 1e-3


def test_pooling_and_normalization():
    h = np.array([[1.0, 2.0], [3.0, 6.0], [0.0, -2.0]], np.float32)
    assert np.allclose(pool(h, "mean"), [4 / 3, 2.0])
    assert np.array_equal(pool(h, "cls"), h[0]) and np.array_equal(pool(h, "last"), h[2])
    assert pool(h, "none") is h
    n = l2_normalize(pool(h, "mean"))
    assert abs(float(np.linalg.norm(n)) - 1) < 1e-6
    assert np.array_equal(l2_normalize(np.zeros(3, np.float32)), np.zeros(3))
    assert pooling_from_metadata({}, "llama") == "mean"
    assert pooling_from_metadata({"llama.pooling_type": 3}, "llama") == "last"
    with pytest.raises(ContextError, match="llama.pooling_type = 4"):
        pooling_from_metadata({"llama.pooling_type": 4}, "llama")


def test_embed_tokens_cleans_its_sequence_and_checks_input(tiny):
    ctx = Context(Model.load(tiny(CONFIGS["qwen2"]), n_threads=2), n_ctx=32, n_batch=4, n_seq_max=2)
    v = embed_tokens(ctx, 1, [3, 4, 5, 6, 7, 8], "mean")
    assert v.shape == (CONFIGS["qwen2"].n_embd,) and abs(float(np.linalg.norm(v)) - 1) < 1e-5
    assert ctx.seq_len(1) == 0
    assert np.allclose(embed_tokens(ctx, 1, [3, 4, 5, 6, 7, 8], "mean"), v, atol=1e-6)  # nothing left behind
    with pytest.raises(ContextError, match="empty"):
        embed_tokens(ctx, 1, [], "mean")
    with pytest.raises(ContextError, match="more than the context"):
        embed_tokens(ctx, 1, list(range(40)), "mean")
    with pytest.raises(ContextError, match="pooling 'max'"):
        embed_tokens(ctx, 1, [1, 2], "max")


# -- the Llama API -------------------------------------------------------------


@pytest.fixture(scope="module")
def llm():
    return Llama(str(fetch_model("smollm2-135m-instruct")), n_ctx=256, n_threads=2, embedding=True, verbose=False)


def test_embed_shapes_and_normalization(llm):
    one = llm.embed("The cat sat on the mat.")
    assert isinstance(one, list) and len(one) == llm.n_embd() and isinstance(one[0], float)
    both, n = llm.embed(["The cat sat on the mat.", "A dog ran."], normalize=True, return_count=True)
    assert len(both) == 2 and n == len(llm.tokenize(b"The cat sat on the mat.")) + len(llm.tokenize(b"A dog ran."))
    assert abs(float(np.linalg.norm(both[0])) - 1) < 1e-5
    assert np.allclose(l2_normalize(np.array(one, np.float32)), both[0], atol=1e-6)  # batch order, same vectors


def test_similar_sentences_are_closer(llm):
    a, b, c = llm.embed(
        ["The weather is sunny and warm today.", "Today it is warm and the sun is shining.", "def f(x): return x"],
        normalize=True,
    )
    assert float(np.dot(a, b)) > float(np.dot(a, c))


def test_create_embedding_response(llm):
    r = llm.create_embedding(["hello", "world"], model="m")
    assert r["object"] == "list" and r["model"] == "m"
    assert [d["index"] for d in r["data"]] == [0, 1] and r["data"][0]["object"] == "embedding"
    assert r["usage"]["prompt_tokens"] == r["usage"]["total_tokens"] > 0


def test_pooling_types_and_truncation():
    path = str(fetch_model("smollm2-135m-instruct"))
    with Llama(path, n_ctx=16, n_threads=2, embedding=True, pooling_type=0, verbose=False) as per_token:
        rows = per_token.embed("one two three")
        assert len(rows) == len(per_token.tokenize(b"one two three")) and len(rows[0]) == per_token.n_embd()
        with Llama(path, n_ctx=16, n_threads=2, embedding=True, pooling_type=3, verbose=False) as last:
            assert np.allclose(last.embed("one two three"), rows[-1], atol=1e-5)
        long = "word " * 40
        assert len(per_token.embed(long)) == 16  # truncate=True keeps the first n_ctx tokens
        with pytest.raises(ValueError, match="exceed context window of 16"):
            per_token.embed(long, truncate=False)
    with pytest.raises(ValueError, match="pooling_type=4"):
        Llama(path, n_ctx=16, embedding=True, pooling_type=4, verbose=False)


def test_embed_needs_embedding_true():
    llm = Llama(str(fetch_model("smollm2-135m-instruct")), n_ctx=64, n_threads=2, verbose=False)
    with llm, pytest.raises(RuntimeError, match="embedding=True"):
        llm.embed("x")


def test_embeddings_while_generations_stream(llm):
    """A long generation streams on the engine while embeddings are taken
    between its steps: the vectors equal those taken alone."""
    text = ["first sentence here", "a second, longer sentence about something else"]
    alone = llm.embed(text)
    session = llm._session
    prompt = llm.tokenize(b"Once upon a time")
    request = session.generate(prompt, Sampler(SamplingParams(temperature=0.0), seed=0), max_tokens=48)
    got: list = []
    worker = threading.Thread(target=lambda: got.append(llm.embed(text)))
    worker.start()
    pieces = list(request.pieces())
    worker.join(timeout=120)
    assert not worker.is_alive() and len(pieces) > 0
    assert np.allclose(np.array(got[0]), np.array(alone), atol=1e-5)
