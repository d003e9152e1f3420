"""The generation loop over one context: prompt prefill that reuses the KV
cache, then token-by-token decode with sampling, stop conditions and
streaming text. Shared by the `Llama` API, the REPL and the benchmark."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from lamina.chat_template import ChatTemplate
from lamina.engine.context import Context, ContextFullError, Model
from lamina.sampling import Sampler
from lamina.tokenizer import Tokenizer

# the default context is the model's training context, capped so the KV cache
# stays within this budget (users with more memory pass -c / n_ctx)
KV_BUDGET_BYTES = 1 << 30


@dataclass
class Timings:
    prompt_tokens: int = 0  # tokens actually evaluated (cache hits excluded)
    prompt_seconds: float = 0.0
    gen_tokens: int = 0  # decode steps evaluated (the last sampled token is never evaluated)
    gen_seconds: float = 0.0
    sampled: int = 0  # tokens generated, what -n / max_tokens count

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds > 0 else 0.0

    @property
    def gen_tps(self) -> float:
        return self.gen_tokens / self.gen_seconds if self.gen_seconds > 0 else 0.0


@dataclass
class Piece:
    """One step of a streamed generation."""

    token: int | None  # None for the final event
    text: str  # text released by this step (may be "")
    finish_reason: str | None = None  # "stop" | "length" | "context" on the final event


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest tail of text that could still grow into a stop string."""
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), hold, -1):
            if text.endswith(s[:k]):
                hold = k
                break
    return hold


def default_n_ctx(model: Model, kv_type: str = "f16", budget: int = KV_BUDGET_BYTES) -> int:
    """The training context, halved until its KV cache fits the budget."""
    n = model.hparams.n_ctx_train
    while n > 512 and model.kv_bytes(n, kv_type) > budget:
        n //= 2
    return n


class Generator:
    """A model, a context, a tokenizer and a chat template, with the cache
    contents tracked so a new prompt evaluates only the tokens that differ
    from what is cached."""

    def __init__(self, model: Model, context: Context, tokenizer: Tokenizer, template: ChatTemplate):
        self.model, self.context, self.tokenizer, self.template = model, context, tokenizer, template
        self.tokens: list[int] = []
        self.timings = Timings()
        self.prefill_chunk: int | None = None  # prompt tokens per native call; None: the context's n_batch

    @property
    def n_ctx(self) -> int:
        return self.context.n_ctx

    def reset(self) -> None:
        self.context.truncate(0)
        self.tokens = []

    def close(self) -> None:
        """Free the context, then the model it points into."""
        self.context.close()
        self.model.close()

    def chat_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        """The conversation through the chat template, tokenized with special
        tokens; a template that writes the BOS text itself (Gemma's) does not
        get a second BOS from the tokenizer."""
        text = self.template.render(messages, add_generation_prompt=True)
        tokens = self.tokenizer.encode(text, special=True)
        bos = self.tokenizer.bos_id
        if bos is not None and tokens[:2] == [bos, bos]:
            tokens = tokens[1:]
        return tokens

    def prefill(self, tokens: Sequence[int], all_logits: bool = False) -> np.ndarray:
        """Make the cache hold exactly `tokens`; returns the logits of the last one
        (or of every newly evaluated one with all_logits)."""
        tokens = [int(t) for t in tokens]
        if not tokens:
            raise ValueError("empty prompt: nothing to evaluate")
        if len(tokens) > self.n_ctx:
            raise ContextFullError(f"prompt of {len(tokens)} tokens does not fit the context of {self.n_ctx}")
        # an interrupt (Ctrl-C) can land between a native eval and this mirror's update
        del self.tokens[self.context.n_past :]
        keep = common_prefix(self.tokens, tokens)
        if keep == len(tokens):
            keep -= 1  # everything is cached, but the last token's logits are needed again
        self.context.truncate(keep)
        self.tokens = self.tokens[:keep]
        # in chunks: an interrupt (Ctrl-C) or a cancelled request lands between two
        # native calls, so it acts within one chunk's time, not the whole prompt's
        step = self.prefill_chunk or self.context.n_batch
        parts = []
        for start in range(keep, len(tokens), step):
            chunk = tokens[start : start + step]
            t0 = time.perf_counter()
            parts.append(self.context.eval(chunk, all_logits=all_logits))
            self.timings.prompt_seconds += time.perf_counter() - t0
            self.timings.prompt_tokens += len(chunk)
            self.tokens.extend(chunk)
        return np.concatenate(parts) if all_logits else parts[-1]

    def decode_one(self, token: int) -> np.ndarray:
        t0 = time.perf_counter()
        logits = self.context.eval([token])
        self.timings.gen_seconds += time.perf_counter() - t0
        self.timings.gen_tokens += 1
        self.tokens.append(int(token))
        return logits

    def generate(
        self,
        prompt: Sequence[int],
        sampler: Sampler,
        max_tokens: int | None,
        stop: Sequence[str] = (),
        stop_at_eog: bool = True,
    ) -> Iterator[Piece]:
        """Stream the continuation of prompt. Text that might be the start of a
        stop string is held back until it is known not to be one."""
        self.timings = Timings()
        logits = self.prefill(prompt)
        stops = [s for s in stop if s]
        detok = self.tokenizer.detokenizer()
        eog = self.tokenizer.eot_ids if stop_at_eog else frozenset()
        text, sent = "", 0
        n = 0
        finish = "length"
        while max_tokens is None or n < max_tokens:
            token = sampler(logits, self.tokens)
            if token in eog:
                finish = "stop"
                break
            n += 1
            self.timings.sampled = n
            text += detok.feed(token)
            cut = min((i for i in (text.find(s, max(0, sent - len(s))) for s in stops) if i >= 0), default=-1)
            if cut >= 0:
                yield Piece(token, text[sent:cut])
                sent = cut
                text = text[:cut]
                finish = "stop"
                break
            release = len(text) - _held_back(text, stops)
            yield Piece(token, text[sent:release])
            sent = max(sent, release)
            if max_tokens is not None and n >= max_tokens:
                break
            if len(self.tokens) >= self.n_ctx:
                finish = "context"
                break
            logits = self.decode_one(token)
        if finish != "stop" or not stops:
            text += detok.flush()
        yield Piece(None, text[sent:], finish_reason=finish)


def open_generator(
    path: str | os.PathLike[str],
    n_ctx: int | None = None,
    n_threads: int | None = None,
    n_batch: int = 512,
    kv_type: str = "f16",
    chat_template: str | None = None,
    gpu_layers: int | str = 0,
    require_gpu: bool = False,
) -> Generator:
    """Load a GGUF and everything needed to generate from it. n_ctx None or 0:
    default_n_ctx. chat_template: template text overriding the file's.
    gpu_layers / require_gpu: layer offload (runtime/engine/offload.py)."""
    model = Model.load(path, n_threads=n_threads)
    meta = model.native.gguf.metadata
    tokenizer = Tokenizer.from_metadata(meta)
    template = ChatTemplate.from_metadata(meta, override=chat_template)
    context = Context(
        model,
        n_ctx=n_ctx or default_n_ctx(model, kv_type),
        n_batch=n_batch,
        kv_type=kv_type,
        n_threads=n_threads,
        gpu_layers=gpu_layers,
        require_gpu=require_gpu,
    )
    return Generator(model, context, tokenizer, template)
