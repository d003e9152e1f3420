"""A loaded model ready to generate: the model, its context of several
sequences, the tokenizer, the chat template and the batched engine over
them. The `Llama` API, the REPL and `lamina run -p` all generate through one
Session's engine, so concurrent callers share each forward pass."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from lamina.chat_template import ChatTemplate
from lamina.engine.context import Context, ContextError, Model
from lamina.engine.embeddings import check_pooling, embed_tokens, pooling_from_metadata
from lamina.engine.encoder import EncoderError
from lamina.engine.encoder_session import is_encoder_file
from lamina.engine.engine import DEFAULT_MAX_QUEUE, DEFAULT_PREFILL_CHUNK, Engine
from lamina.engine.lora import LoraSet, load_loras
from lamina.engine.offload import OffloadWarning, cuda_offload_planned
from lamina.engine.request import Request
from lamina.grammar import Grammar
from lamina.sampling import Sampler
from lamina.speculative import Speculative
from lamina.tokenizer import Tokenizer

# the default context is the model's training context, capped so the KV cache
# stays within this budget (users with more memory pass -c / n_ctx)
KV_BUDGET_BYTES = 1 << 30


def default_n_ctx(model: Model, kv_type: str = "f16", budget: int = KV_BUDGET_BYTES) -> int:
    """The training context, halved until its KV cache fits the budget."""
    n = model.hparams.n_ctx_train
    while n > 512 and model.kv_bytes(n, kv_type) > budget:
        n //= 2
    return n


class Session:
    def __init__(self, model: Model, context: Context, tokenizer: Tokenizer, template: ChatTemplate, engine: Engine):
        self.model, self.context, self.tokenizer, self.template, self.engine = (
            model,
            context,
            tokenizer,
            template,
            engine,
        )
        self.loras: LoraSet | None = None  # LoRA adapters, when the session was opened with some

    @property
    def n_ctx(self) -> int:
        """Positions one conversation may hold."""
        return self.context.n_ctx_seq

    def chat_tokens(
        self, messages: Sequence[Mapping[str, object]], tools: Sequence[Mapping[str, object]] | None = None
    ) -> list[int]:
        """The conversation (and the tools, lamina.tool_calls.prompt_inputs)
        through the chat template, tokenized with special tokens; a template
        that writes the BOS text itself (Gemma's) does not get a second BOS
        from the tokenizer."""
        text = self.template.render(messages, add_generation_prompt=True, tools=tools)
        tokens = self.tokenizer.encode(text, special=True)
        bos = self.tokenizer.bos_id
        if bos is not None and tokens[:2] == [bos, bos]:
            tokens = tokens[1:]
        return tokens

    def generate(
        self,
        prompt: Sequence[int],
        sampler: Sampler,
        max_tokens: int | None = None,
        stops: Sequence[str] = (),
        grammar: Grammar | None = None,
        speculative: Speculative | None = None,
    ) -> Request:
        """Queue a generation on the engine; read it with request.pieces().
        grammar: the output must match it (lamina.grammar); speculative:
        draft and verify (lamina.speculative)."""
        return self.engine.submit(
            prompt, sampler, max_tokens=max_tokens, stops=stops, grammar=grammar, speculative=speculative
        )

    @property
    def spare_seq(self) -> int | None:
        """The first sequence the engine does not schedule (embeddings and
        Llama's low-level eval run there), or None when the context has none."""
        n = len(self.engine.slots.slots)
        return n if n < self.context.n_seq_max else None

    @property
    def pooling(self) -> str:
        """The model's pooling for embeddings (its `{arch}.pooling_type`, else mean)."""
        return pooling_from_metadata(self.model.native.gguf.metadata, self.model.hparams.arch)

    def embed_many(
        self, token_lists: Sequence[Sequence[int]], pooling: str | None = None, normalize: bool = True
    ) -> list[np.ndarray]:
        """One embedding per input ([n_embd] float32, L2-normalized unless
        normalize=False; [n_tokens, n_embd] for pooling "none"). Each input
        runs alone in the spare sequence between two engine steps, so
        generations keep streaming while a long list is embedded."""
        seq = self.spare_seq
        if seq is None:
            raise ContextError("this session has no spare sequence for embeddings (open it with extra_sequences=1)")
        pooling = check_pooling(pooling or self.pooling)
        out = []
        for tokens in token_lists:
            with self.engine.exclusive() as ctx:
                out.append(embed_tokens(ctx, seq, tokens, pooling, normalize))
        return out

    def cached_tokens(self, request: Request) -> int:
        """Positions the request's sequence holds now (its prompt and reply so far)."""
        return 0 if request.slot is None else len(self.engine.slots.slots[request.slot].tokens)

    def reset(self) -> None:
        """Forget every cached sequence."""
        with self.engine.exclusive() as ctx:
            for slot in self.engine.slots.slots:
                ctx.seq_rm(slot.seq, 0)
                slot.tokens = []

    def close(self) -> None:
        """Stop the engine, free the context, then the model it points into."""
        self.engine.close()
        self.context.close()
        self.model.close()


def open_session(
    path: str | os.PathLike[str],
    n_ctx: int | None = None,
    n_threads: int | None = None,
    n_batch: int = 512,
    kv_type: str = "f16",
    chat_template: str | None = None,
    gpu_layers: int | str = 0,
    require_gpu: bool = False,
    n_slots: int = 1,
    extra_sequences: int = 0,
    kv_unified: bool = True,
    max_queue: int = DEFAULT_MAX_QUEUE,
    prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
    loras: Sequence[tuple[str | os.PathLike[str], float]] = (),
) -> Session:
    """Load a GGUF and everything needed to generate from it.

    n_ctx None or 0: default_n_ctx. chat_template: template text overriding
    the file's. gpu_layers / require_gpu: layer offload. n_slots: requests
    that run at once (the rest wait in a queue of max_queue); extra_sequences:
    sequences of the context the engine leaves to the caller. kv_unified: each
    sequence may use the whole n_ctx of the shared cache (llama.cpp's
    --kv-unified), else n_ctx / n_slots each (llama-server's -np split).
    loras: LoRA adapter files and their scales (llama.cpp's --lora-scaled),
    applied at run time (session.loras; lamina.engine.lora)."""
    if is_encoder_file(path):
        raise EncoderError(
            f"{path}: an encoder model (bert) embeds and ranks, it does not generate: use "
            "Llama(path, embedding=True).embed() / .rerank(), or lamina serve's /v1/embeddings and /v1/rerank"
        )
    if n_slots + extra_sequences > 1 and cuda_offload_planned(gpu_layers):
        warnings.warn(
            f"CUDA offload decodes one sequence per context: {n_slots} slot(s) + {extra_sequences} spare become "
            "one sequence (concurrent requests wait in the queue; embeddings need a CPU context)",
            OffloadWarning,
            stacklevel=2,
        )
        n_slots, extra_sequences = 1, 0
    model = Model.load(path, n_threads=n_threads)
    meta = model.native.gguf.metadata
    tokenizer = Tokenizer.from_metadata(meta)
    template = ChatTemplate.from_metadata(meta, override=chat_template)
    n_ctx = n_ctx or default_n_ctx(model, kv_type)
    context = Context(
        model,
        n_ctx=n_ctx,
        n_batch=n_batch,
        kv_type=kv_type,
        n_threads=n_threads,
        gpu_layers=gpu_layers,
        require_gpu=require_gpu,
        n_seq_max=n_slots + extra_sequences,
        n_ctx_seq=n_ctx if kv_unified else max(1, n_ctx // n_slots),
    )
    engine = Engine(model, context, tokenizer, n_slots=n_slots, max_queue=max_queue, prefill_chunk=prefill_chunk)
    session = Session(model, context, tokenizer, template, engine)
    if loras:
        try:
            session.loras = engine.loras = load_loras(context, loras)
        except BaseException:
            session.close()
            raise
    return session
