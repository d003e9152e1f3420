"""Token log-probabilities for `logprobs` / `top_logprobs`, and their two
response shapes: OpenAI's chat `choices[].logprobs.content[]` and the legacy
completions shape llama-cpp-python returns (tokens, token_logprobs,
top_logprobs, text_offset).

Which distribution: the model's own, log_softmax of the raw logits of the
position, before logit bias, penalties, grammar masks, temperature and
truncation (what OpenAI reports and llama-cpp-python computes; llama-server
reports the sampler chain's probabilities instead). So a logprob does not
depend on the sampling settings, and a token the sampler was forced to pick
(a grammar, a logit bias) still shows how likely the model found it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lamina.errors import LaminaError
from lamina.tokenizer import Tokenizer

MAX_TOP_LOGPROBS = 20  # OpenAI's cap on top_logprobs; lamina's on completions' logprobs=N too


class LogprobsError(LaminaError, ValueError):
    """A logprobs / top_logprobs value outside what lamina returns; the message names it."""


@dataclass(frozen=True)
class TokenLogprob:
    token: int
    logprob: float
    top: tuple[tuple[int, float], ...]  # the most likely tokens (id, logprob), most likely first


def check_count(name: str, value: object) -> int:
    """A number of alternatives in [0, MAX_TOP_LOGPROBS]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise LogprobsError(f"{name} must be an integer in [0, {MAX_TOP_LOGPROBS}], got {value!r}")
    if not 0 <= int(value) <= MAX_TOP_LOGPROBS:
        raise LogprobsError(f"{name} must be in [0, {MAX_TOP_LOGPROBS}], got {value}")
    return int(value)


def chat_count(logprobs: object, top_logprobs: object) -> int | None:
    """OpenAI's chat pair: None (no logprobs) or how many alternatives to list."""
    if logprobs is None or logprobs is False:
        if top_logprobs is not None:
            raise LogprobsError("top_logprobs needs logprobs=True")
        return None
    if logprobs is not True:
        raise LogprobsError(f"logprobs must be true or false in a chat completion, got {logprobs!r}")
    return 0 if top_logprobs is None else check_count("top_logprobs", top_logprobs)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """f64 [n] log-probabilities of a row of logits."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def token_logprob(logits: np.ndarray, token: int, n_top: int) -> TokenLogprob:
    """The chosen token's log-probability and the n_top most likely tokens."""
    lp = log_softmax(logits)
    top: tuple[tuple[int, float], ...] = ()
    if n_top:
        ids = np.argpartition(-lp, n_top - 1)[:n_top]
        ids = ids[np.lexsort((ids, -lp[ids]))]  # most likely first, ties by id
        top = tuple((int(i), float(lp[i])) for i in ids)
    return TokenLogprob(int(token), float(lp[token]), top)


PROMPT_CHUNK = 256  # prompt positions whose logits are held at once (152k-vocabulary rows are 600 KB each)


def prompt_logprobs(ctx: Any, seq: int, tokens: Sequence[int], n_top: int) -> list[TokenLogprob | None]:
    """Logprobs of every prompt token given the ones before it (None for the
    first, which has no context), from one evaluation of the prompt in
    sequence seq of the context (emptied before and after), a chunk of
    positions at a time. The caller holds the engine's exclusive() lock."""
    ctx.seq_rm(seq, 0)
    out: list[TokenLogprob | None] = [None]
    try:
        for start in range(0, len(tokens), PROMPT_CHUNK):
            chunk = np.asarray(tokens[start : start + PROMPT_CHUNK], np.int32)
            rows = ctx.decode_run(chunk, seq, "all")  # f32 [chunk, n_vocab]: row i predicts token start + i + 1
            for i in range(len(chunk)):
                if start + i + 1 < len(tokens):
                    out.append(token_logprob(rows[i], int(tokens[start + i + 1]), n_top))
    finally:
        ctx.seq_rm(seq, 0)
    return out


def _piece(tokenizer: Tokenizer, token: int) -> bytes:
    return tokenizer.token_to_piece(token, special=True)


def _text(piece: bytes) -> str:
    return piece.decode("utf-8", errors="replace")


def chat_content(entries: Sequence[TokenLogprob], tokenizer: Tokenizer) -> list[dict[str, Any]]:
    """OpenAI's logprobs.content: one entry per generated token."""

    def one(token: int, logprob: float) -> dict[str, Any]:
        piece = _piece(tokenizer, token)
        return {"token": _text(piece), "logprob": logprob, "bytes": list(piece)}

    return [{**one(e.token, e.logprob), "top_logprobs": [one(t, lp) for t, lp in e.top]} for e in entries]


class CompletionLogprobs:
    """The legacy completions shape, built token by token (a stream sends
    each chunk's share): text_offset counts characters of the returned text,
    the echoed prompt included."""

    def __init__(self, tokenizer: Tokenizer, offset: int = 0) -> None:
        """offset: characters before the first token (the echoed prompt's, when only the reply is listed)."""
        self.tokenizer = tokenizer
        self.offset = offset  # characters of text before the next token
        self._detok = tokenizer.detokenizer()

    def chunk(self, entries: Sequence[TokenLogprob | None], tokens: Sequence[int] | None = None) -> dict[str, Any]:
        """tokens: the ids of entries that are None (the first prompt token)."""
        out: dict[str, list[Any]] = {"tokens": [], "text_offset": [], "token_logprobs": [], "top_logprobs": []}
        for i, e in enumerate(entries):
            token = e.token if e is not None else int(tokens[i])  # type: ignore[index]
            piece = _piece(self.tokenizer, token)
            out["tokens"].append(_text(piece))
            out["text_offset"].append(self.offset)
            out["token_logprobs"].append(None if e is None else e.logprob)
            if e is None:
                out["top_logprobs"].append(None)
            else:
                top = {_text(_piece(self.tokenizer, t)): lp for t, lp in e.top}
                top[out["tokens"][-1]] = e.logprob  # llama-cpp-python lists the chosen token too
                out["top_logprobs"].append(top)
            self._advance(token)
        return out

    def _advance(self, token: int) -> None:
        # the characters this token completes, as the streamed text decodes them
        self.offset += len(self._detok.feed(token))


def merge(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several chunk() results as one."""
    out: dict[str, list[Any]] = {"tokens": [], "text_offset": [], "token_logprobs": [], "top_logprobs": []}
    for p in parts:
        for k in out:
            out[k] += p[k]
    return out


class LogprobsShape:
    """A completion's logprobs in its API's shape: OpenAI's chat content, or
    the legacy completions shape whose offsets continue after the prompt's
    text (and list the prompt's own tokens first when echoed)."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        chat: bool = False,
        prompt_text: str = "",
        prompt_tokens: Sequence[int] = (),
        prompt_entries: list[TokenLogprob | None] | None = None,
    ) -> None:
        self.tokenizer, self.chat = tokenizer, chat
        self.prompt_tokens, self.prompt_entries = list(prompt_tokens), prompt_entries
        self._reply = CompletionLogprobs(tokenizer, len(prompt_text))

    def prompt(self) -> dict[str, Any] | None:
        """The echoed prompt's tokens (the first without a logprob), or None without echo."""
        if self.prompt_entries is None:
            return None
        return CompletionLogprobs(self.tokenizer).chunk(self.prompt_entries, self.prompt_tokens)

    def chunk(self, entries: Sequence[TokenLogprob]) -> dict[str, Any]:
        """The next reply tokens' share (a stream's chunk)."""
        if self.chat:
            return {"content": chat_content(entries, self.tokenizer), "refusal": None}
        return self._reply.chunk(entries)

    def final(self, entries: Sequence[TokenLogprob]) -> dict[str, Any]:
        """The whole completion's (the echoed prompt's first)."""
        reply = self.chunk(entries)
        head = None if self.chat else self.prompt()
        return reply if head is None else merge([head, reply])
