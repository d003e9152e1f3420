"""`Llama` over an encoder model (bert): what `Llama("bge.gguf", embedding=True)`
gives. It embeds (embed, create_embedding: llama-cpp-python's shapes, pooled as
the file's `{arch}.pooling_type` says) and reranks (rerank: llama-server's
/v1/rerank results); everything that would generate text raises EncoderError
naming the model, instead of failing somewhere inside the engine."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from lamina import options
from lamina.engine.encoder import EncoderError
from lamina.engine.encoder_session import open_encoder_session
from lamina.llama import Llama, _meta_str, _pooling_name
from lamina.llama_params import DEFAULTS_INIT, HARMLESS_INIT, check_extra

# what an encoder Llama does; every other public method of Llama is refused
_ENCODER_API = frozenset(
    {
        "close",
        "embed",
        "create_embedding",
        "rerank",
        "tokenize",
        "detokenize",
        "n_embd",
        "n_ctx",
        "n_vocab",
        "token_bos",
        "token_eos",
        "set_seed",
        "from_pretrained",
    }
)


class EncoderLlama(Llama):
    def __init__(
        self,
        model_path: str,
        *,
        n_gpu_layers: int = 0,
        n_ctx: int = 512,
        n_threads: int | None = None,
        verbose: bool = True,
        embedding: bool = False,
        pooling_type: int = -1,
        chat_template: str | None = None,
        logits_all: bool = False,
        **extra: Any,
    ):
        """Llama's parameters; those about the KV cache, batching and sampling
        (n_batch, kv_type, n_seq_max, seed, ...) have nothing to act on in an
        encoder and change no result. n_ctx: inputs longer than this (0: the
        model's position table) are truncated or refused, as embed says."""
        for name in ("n_batch", "kv_type", "n_seq_max", "kv_unified", "max_queue", "seed"):
            extra.pop(name, None)
        check_extra("Llama", extra, DEFAULTS_INIT, HARMLESS_INIT)
        if chat_template is not None:
            raise EncoderError(f"{model_path}: chat_template: an encoder model has no chat")
        if logits_all:
            raise EncoderError(f"{model_path}: logits_all: an encoder model has no logits")
        self.embedding = bool(embedding)
        self._pooling = _pooling_name(pooling_type)
        path = options.model_file(model_path)
        self.model_path = str(path)
        self.verbose = verbose
        self._closed = False
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            self._enc = open_encoder_session(
                path, n_threads=None if n_threads is None else options.n_threads(n_threads), gpu_layers=n_gpu_layers
            )
        # Llama's embed, create_embedding and close call the session's embed_many and close, which this one has
        self._session = self._enc  # type: ignore[assignment]
        for w in caught:
            if verbose:
                print(f"lamina: {w.message}", file=sys.stderr)
        s = self._enc
        self.tokenizer_ = s.tokenizer
        n_ctx = options.n_ctx(n_ctx)
        if n_ctx > s.n_ctx and verbose:
            print(f"lamina: n_ctx={n_ctx} capped to the model's {s.n_ctx} positions", file=sys.stderr)
        self._n_ctx = min(n_ctx or s.n_ctx, s.n_ctx)  # as llama.cpp: no input runs past the position table
        self._n_vocab = s.model.n_vocab
        self._raw: list[int] = []
        self.logits_all = False
        self.metadata = {k: _meta_str(v) for k, v in s.model.gguf.metadata.items() if not isinstance(v, (list, tuple))}
        if verbose:
            hp = s.model.hparams
            print(
                f"lamina: encoder {hp.arch}, {hp.n_layer} layers, n_embd={hp.n_embd}, n_ctx={self._n_ctx}"
                + (", reranker" if s.is_reranker else f", pooling {s.pooling}"),
                file=sys.stderr,
            )

    def n_embd(self) -> int:
        return self._enc.model.hparams.n_embd

    def n_ctx(self) -> int:
        return self._n_ctx

    def set_seed(self, seed: int) -> None:
        options.seed(seed)  # checked; nothing is sampled

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[dict[str, Any]]:
        """llama-server's /v1/rerank results: [{"index", "relevance_score"}]
        for each document, best first, the first top_n of them (None: all).
        Scores are the classifier's raw output (a logit), not normalized."""
        self._check_open()
        if not isinstance(query, str) or isinstance(documents, str):
            raise TypeError("rerank(query: str, documents: list[str])")
        if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
            raise ValueError(f"top_n={top_n!r}: expected a positive integer or None")
        scores, _ = self._enc.rerank(query, list(documents))
        results = [{"index": i, "relevance_score": s} for i, s in enumerate(scores)]
        results.sort(key=lambda r: -r["relevance_score"])
        return results[:top_n] if top_n is not None else results


def _refusal(name: str):
    def refuse(self: EncoderLlama, *args: Any, **kwargs: Any) -> NoReturn:
        self._check_open()
        raise EncoderError(
            f"{self.model_path} is an encoder model ({self._enc.model.hparams.arch}): it embeds and reranks, "
            f"{name}() needs a model that generates"
        )

    refuse.__name__ = name
    refuse.__doc__ = f"Refused: {name} needs a decoder model."
    return refuse


for _name, _value in list(vars(Llama).items()):
    if not _name.startswith("_") and callable(_value) and _name not in _ENCODER_API:
        setattr(EncoderLlama, _name, _refusal(_name))
if "__call__" in vars(Llama):
    EncoderLlama.__call__ = _refusal("__call__")  # type: ignore[method-assign]
