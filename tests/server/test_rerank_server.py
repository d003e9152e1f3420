"""`lamina serve` on encoder models (tests/support/tiny_bert.py, converted):
/v1/embeddings through the openai client equals Llama.embed; llama-server's
rerank endpoints (/v1/rerank, /rerank) equal Llama.rerank, with top_n and
return_documents; generation on an encoder is a 400 naming it. The
cross-encoder runs in a real server process; the embedding model (whose
rerank is a 400) in the app in this process, which costs no second start."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("transformers")

from lamina import Llama  # noqa: E402
from lamina.convert.encode import Encoder  # noqa: E402
from lamina.convert.hf.convert import plan_hf  # noqa: E402
from lamina.convert.pipeline import run_job  # noqa: E402
from lamina.convert.recipes import get_mix  # noqa: E402
from support.serve_process import serving  # noqa: E402
from support.tiny_bert import cached_tiny_bert  # noqa: E402

ALIAS = "tiny-bert"
QUERY = "what is the giant panda?"
DOCS = ["The giant panda is a bear species endemic to China.", "Paris is the capital of France.", "bamboo", "1 2 3"]


def _converted(kind: str, tmp: Path) -> Path:
    out = tmp / f"bert-{kind}.gguf"
    enc = Encoder(1)
    try:
        run_job(plan_hf(cached_tiny_bert(kind), get_mix("f32"), enc, out))
    finally:
        enc.close()
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """a real `lamina serve` process on the cross-encoder"""
    gguf = _converted("rerank", tmp_path_factory.mktemp("rerank"))
    with serving(str(gguf), "-t", "2", "--alias", ALIAS) as base:
        yield "rerank", gguf, base


def test_embedding_model_in_process(tmp_path: Path) -> None:
    """The embedding model (no classifier head) on the app in this process:
    embeddings as Llama's, rerank a 400."""
    from fastapi.testclient import TestClient

    from lamina.server.app import create_app
    from lamina.server.service import ServerConfig, Service

    gguf = _converted("mean", tmp_path)
    service = Service(ServerConfig(model=gguf, alias=ALIAS, n_threads=2))
    service.load()
    assert service.load_error is None, service.load_error
    with TestClient(create_app(service, load_in_background=False)) as client:
        r = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS})
        assert r.status_code == 400 and r.json()["error"]["code"] == "not_a_reranker"
        out = client.post("/v1/embeddings", json={"input": "Hello, World!", "model": ALIAS}).json()
        with Llama(str(gguf), embedding=True, verbose=False) as llm:
            want = llm.embed("Hello, World!", normalize=True)
        np.testing.assert_allclose(out["data"][0]["embedding"], want, rtol=0, atol=1e-6)
        r = client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 4})
        assert r.status_code == 400 and "encoder model" in r.json()["error"]["message"]


def test_embeddings_equal_llama(served) -> None:
    _, gguf, base = served
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=60)
    texts = ["Hello, World!", "naïve café and 東京"]
    out = client.embeddings.create(input=texts, model=ALIAS)
    with Llama(str(gguf), embedding=True, verbose=False) as llm:
        for d, text in zip(out.data, texts):
            np.testing.assert_allclose(d.embedding, llm.embed(text, normalize=True), rtol=0, atol=1e-6)
        assert out.usage.prompt_tokens == sum(len(llm.tokenize(t.encode(), special=True)) for t in texts)


def test_rerank(served) -> None:
    _, gguf, base = served
    body = {"model": ALIAS, "query": QUERY, "documents": DOCS}
    r = httpx.post(f"{base}/v1/rerank", json=body, timeout=60)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["object"] == "list" and got["model"] == ALIAS
    with Llama(str(gguf), embedding=True, verbose=False) as llm:
        want = llm.rerank(QUERY, DOCS)
    assert [x["index"] for x in got["results"]] == [x["index"] for x in want]
    np.testing.assert_allclose(
        [x["relevance_score"] for x in got["results"]], [x["relevance_score"] for x in want], atol=1e-6
    )
    top = httpx.post(f"{base}/rerank", json=body | {"top_n": 2, "return_documents": True}, timeout=60).json()
    assert [x["index"] for x in top["results"]] == [x["index"] for x in want[:2]]
    assert top["results"][0]["document"]["text"] == DOCS[want[0]["index"]]
    for bad, field in (({"documents": []}, "documents"), ({"top_n": 0}, "top_n"), ({"query": None}, "query")):
        r = httpx.post(f"{base}/v1/rerank", json=body | bad, timeout=30)
        assert r.status_code == 400 and field in r.text, r.text


def test_generation_is_a_400(served) -> None:
    _, _, base = served
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=60)
    with pytest.raises(openai.BadRequestError, match="encoder model"):
        client.chat.completions.create(model=ALIAS, messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.BadRequestError, match="encoder model"):
        client.completions.create(model=ALIAS, prompt="Hi", stream=True)
    assert httpx.get(f"{base}/health", timeout=10).status_code == 200
