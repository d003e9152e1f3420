"""A loaded encoder model (bert) for the two things it does: embeddings and
rerank scores. `Llama` (lamina.llama_encoder) and `lamina serve` hold one
where a decoder model would have a Session; what only a decoder has (the
engine, a KV context, a chat template, generation) raises EncoderError, which
the server turns into a 400 naming the model.

    s = open_encoder_session("bge-small.gguf")
    [vec] = s.embed_many([s.tokenizer.encode("hello")])      # pooled as the file says
    scores = s.rerank("what is a panda?", ["The giant panda ...", "Paris is ..."])
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

import numpy as np

from lamina.engine.embeddings import check_pooling, l2_normalize, pool
from lamina.engine.encoder import EncoderError, EncoderModel, is_encoder
from lamina.engine.offload import OffloadWarning, cuda_offload_planned, parse_gpu_layers
from lamina.gguf.reader import GGUFFile
from lamina.tokenizer import Tokenizer

# an encoder file that names no pooling: llama.cpp's bert default is CLS
DEFAULT_ENCODER_POOLING = "cls"


def is_encoder_file(path: str | os.PathLike[str]) -> bool:
    return is_encoder(GGUFFile(path))


def open_encoder_session(
    path: str | os.PathLike[str], n_threads: int | None = None, gpu_layers: int | str = 0
) -> EncoderSession:
    """gpu_layers: an encoder runs on the CPU; asking for CUDA offload is an
    error when a GPU would be used, a warning when none is there."""
    if parse_gpu_layers(gpu_layers) != 0:
        if cuda_offload_planned(gpu_layers):
            raise EncoderError(
                f"{path}: GPU offload of encoder (bert) models is not supported; run it with gpu_layers=0 (CPU)"
            )
        warnings.warn("encoder (bert) models run on the CPU: gpu_layers is ignored", OffloadWarning, stacklevel=2)
    model = EncoderModel.load(path, n_threads)
    return EncoderSession(model, Tokenizer.from_metadata(model.gguf.metadata))


class EncoderSession:
    is_encoder = True

    def __init__(self, model: EncoderModel, tokenizer: Tokenizer) -> None:
        self.model, self.tokenizer = model, tokenizer
        hp = model.hparams
        if tokenizer.n_vocab != hp.n_vocab:
            raise EncoderError(f"{model.path}: {tokenizer.n_vocab} tokens but token_embd has {hp.n_vocab} rows")

    @property
    def n_ctx(self) -> int:
        """The longest input: the position table's rows."""
        return self.model.hparams.n_pos

    @property
    def is_reranker(self) -> bool:
        return self.model.hparams.n_cls_out > 0

    @property
    def pooling(self) -> str:
        """The file's pooling for embeddings (`{arch}.pooling_type`), else cls."""
        p = self.model.hparams.pooling
        return DEFAULT_ENCODER_POOLING if p is None or p == "rank" else p

    def embed_many(
        self, token_lists: Sequence[Sequence[int]], pooling: str | None = None, normalize: bool = True
    ) -> list[np.ndarray]:
        """One embedding per input ([n_embd] float32, L2-normalized unless
        normalize=False; [n_tokens, n_embd] for pooling "none")."""
        pooling = check_pooling(pooling or self.pooling)
        out = []
        for tokens in token_lists:
            v = pool(self.model.hidden(tokens), pooling)
            out.append(l2_normalize(v) if normalize else v)
        return out

    def pair_tokens(self, query: str, document: str) -> tuple[list[int], list[int]]:
        """A cross-encoder's input: [CLS] query [SEP] document [SEP], with token
        type 0 for the first segment and 1 for the second, as BERT was
        trained (llama.cpp passes type 0 everywhere)."""
        tok = self.tokenizer
        first = tok.encode(query, special=True)  # [CLS] query [SEP]
        second = tok.encode(document, add_bos=False, special=True)
        if tok.vocab.sep_id is not None:
            second.append(tok.vocab.sep_id)
        return first + second, [0] * len(first) + [1] * len(second)

    def rerank(self, query: str, documents: Sequence[str]) -> tuple[list[float], int]:
        """One relevance score per document (the classifier's first output on
        the pair's CLS row, llama.cpp's rank pooling), and the tokens evaluated."""
        if not self.is_reranker:
            raise EncoderError(
                f"{self.model.path}: not a reranking model (no classifier head cls.output); "
                "rerank needs a cross-encoder such as a BertForSequenceClassification converted with num_labels=1"
            )
        scores, n = [], 0
        for i, doc in enumerate(documents):
            tokens, types = self.pair_tokens(query, doc)
            if len(tokens) > self.n_ctx:
                raise EncoderError(
                    f"documents.{i}: the query and document are {len(tokens)} tokens; the model takes {self.n_ctx}"
                )
            scores.append(float(self.model.rank_score(self.model.hidden(tokens, types))[0]))
            n += len(tokens)
        return scores, n

    # -- what only a decoder has ----------------------------------------------

    def _refuse(self, what: str) -> NoReturn:
        raise EncoderError(
            f"{os.path.basename(self.model.path)} is an encoder model ({self.model.hparams.arch}): it computes "
            f"embeddings and rerank scores, it cannot {what}"
        )

    @property
    def engine(self) -> Any:
        self._refuse("generate text")

    @property
    def context(self) -> Any:
        self._refuse("hold a KV cache")

    @property
    def template(self) -> Any:
        self._refuse("apply a chat template")

    def generate(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse("generate text")

    def chat_tokens(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse("chat")

    def reset(self) -> None:
        pass  # nothing is cached between inputs

    def close(self) -> None:
        self.model.close()
