"""What the routes share: the server's settings, the loaded model (a
Session and its engine, loaded in the background so /health answers 503
until it is ready), the metrics, and the checks every generation request
goes through before it reaches the engine."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lamina import options
from lamina.engine.encoder_session import EncoderSession, is_encoder_file, open_encoder_session
from lamina.generation import Session, open_session
from lamina.grammar import Grammar, GrammarError, request_grammar, vocabulary
from lamina.options import OptionError
from lamina.sampling import Sampler, SamplingParams
from lamina.server.errors import APIError
from lamina.server.metrics import Metrics
from lamina.server.schemas import Sampling
from lamina.speculative import Speculative, SpeculativeError


@dataclass
class ServerConfig:
    model: Path
    alias: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    n_parallel: int = 4  # -np: requests decoded together
    n_ctx: int = 0  # all slots' cells; 0: the model's default
    kv_unified: bool = False  # each slot may use all of n_ctx, else n_ctx / n_parallel each
    n_threads: int | None = None
    n_batch: int = 512
    gpu_layers: int | str = 0
    cache_type: str = "f16"
    chat_template: str | None = None
    api_keys: list[str] = field(default_factory=list)
    cors_origins: list[str] = field(default_factory=list)
    max_queue: int = 64
    timeout: float = 600.0  # seconds a request may take in all
    max_body: int = 8 << 20
    slot_save_path: Path | None = None  # --slot-save-path: where POST /slots/{id} saves and restores
    loras: list[tuple[str, float]] = field(default_factory=list)  # --lora / --lora-scaled: (file, scale)
    speculative: Speculative | None = None  # --lookup / --model-draft

    @property
    def model_name(self) -> str:
        return self.alias or self.model.name


class Service:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.session: Session | EncoderSession | None = None
        self.load_error: BaseException | None = None
        self.created = int(time.time())
        self._ready = threading.Event()
        self._max_token_bytes = 1

    # ------------------------------------------------------------- loading
    def load(self) -> None:
        c = self.config
        try:
            if is_encoder_file(c.model):
                # embeddings and /v1/rerank only: generation routes get EncoderError's 400
                self.session = open_encoder_session(c.model, n_threads=c.n_threads, gpu_layers=c.gpu_layers)
                return
            self.session = open_session(
                c.model,
                n_ctx=c.n_ctx or None,
                n_threads=c.n_threads,
                n_batch=c.n_batch,
                kv_type=c.cache_type,
                chat_template=c.chat_template,
                gpu_layers=c.gpu_layers,
                n_slots=c.n_parallel,
                extra_sequences=1,  # embeddings run there, beside the slots
                kv_unified=c.kv_unified,
                max_queue=c.max_queue,
                loras=c.loras,
            )
            tok = self.session.tokenizer
            self._max_token_bytes = max(1, max(len(tok.token_to_piece(i, special=True)) for i in range(tok.n_vocab)))
            vocabulary(tok)  # constrained output's view of the vocabulary, built now rather than on a request's time
            m = self.metrics
            engine = self.session.engine
            m.queue_depth.set_function(lambda: engine.n_waiting)
            m.busy_slots.set_function(lambda: engine.n_busy)
            m.slots.set(c.n_parallel)
        except BaseException as e:
            self.load_error = e
        finally:
            self._ready.set()

    @property
    def ready(self) -> bool:
        return self.session is not None

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def require(self) -> Session | EncoderSession:
        if self.session is None:
            if self.load_error is not None:
                raise APIError(503, f"the model failed to load: {self.load_error}", code="model_load_failed")
            raise APIError(503, "the model is loading", code="loading", headers={"Retry-After": "5"})
        return self.session

    def plan(self) -> str:
        s = self.require()
        if isinstance(s, EncoderSession):
            hp = s.model.hparams
            return f"encoder {hp.arch} ({'rerank' if s.is_reranker else s.pooling + ' pooling'}), {s.n_ctx} positions"
        ctx = s.context
        return (
            f"{self.config.n_parallel} slots x {ctx.n_ctx_seq} positions each "
            f"({'one pool of ' + str(ctx.n_ctx) + ' cells shared' if self.config.kv_unified else 'split'}), "
            f"KV cache {ctx.kv_bytes / 2**20:.1f} MiB {ctx.kv_type}, {ctx.n_threads} threads"
        )

    def close(self) -> None:
        if self.session is not None:
            self.session.close()

    # -------------------------------------------------------------- checks
    def check_model(self, name: str | None) -> None:
        """A request may name the alias, the file name or its stem (or nothing)."""
        if name is None or name == "":
            return
        allowed = {self.config.model_name, self.config.model.name, self.config.model.stem}
        if name not in allowed:
            raise APIError(
                404,
                f"model {name!r} does not exist here; this server serves {self.config.model_name!r}",
                param="model",
                code="model_not_found",
            )

    def check_unsupported(self, body: Sampling) -> None:
        bad = body.unsupported()
        if bad:
            raise APIError(400, f"{bad[0]} is not supported by lamina yet", param=bad[0], code="unsupported_parameter")

    def check_text_length(self, text: str, field_name: str) -> None:
        """Before tokenizing: a text so long that even the longest tokens could
        not fit it in the context is refused without tokenizing it."""
        s = self.require()
        if len(text.encode("utf-8", "surrogatepass")) > s.n_ctx * self._max_token_bytes:
            raise APIError(
                400,
                f"{field_name} is far longer than the context of {s.n_ctx} tokens",
                param=field_name,
                code="context_length_exceeded",
            )

    def check_prompt(self, tokens: list[int], max_tokens: int | None, field_name: str) -> None:
        s = self.require()
        if not tokens:
            raise APIError(400, f"{field_name} is empty", param=field_name)
        if len(tokens) >= s.n_ctx:
            raise APIError(
                400,
                f"{field_name} is {len(tokens)} tokens; the context holds {s.n_ctx} per request",
                param=field_name,
                code="context_length_exceeded",
            )
        if max_tokens is not None and max_tokens > s.n_ctx:
            raise APIError(
                400, f"max_tokens={max_tokens} is more than the context of {s.n_ctx} tokens", param="max_tokens"
            )
        bad = next((t for t in tokens if not 0 <= t < s.model.n_vocab), None)
        if bad is not None:
            raise APIError(400, f"token {bad} is outside the vocabulary [0, {s.model.n_vocab})", param=field_name)

    def grammar(self, body: Sampling) -> Grammar | None:
        """The request's constraint on its output (response_format, or
        llama-server's grammar / json_schema); an invalid one is a 400."""
        try:
            return request_grammar(body.grammar, body.response_format, body.json_schema)
        except GrammarError as e:
            given = [n for n in ("response_format", "grammar", "json_schema") if getattr(body, n) is not None]
            param = next((n for n in given if str(e).startswith(n)), given[0] if given else None)
            raise APIError(400, str(e), param=param, code="invalid_grammar") from None

    def sampler(self, body: Sampling, choice: int, defaults: SamplingParams) -> Sampler:
        """The request's sampler; choice i of n gets seed + i, so n choices differ but replay."""

        def pick(value, default):
            return default if value is None else value

        try:
            bias = options.logit_bias(body.logit_bias)
        except OptionError as e:
            raise APIError(400, str(e), param="logit_bias") from None
        bad = next((t for t, _ in bias if t >= self.require().model.n_vocab), None)
        if bad is not None:
            raise APIError(
                400,
                f"logit_bias token id {bad} is outside the vocabulary [0, {self.require().model.n_vocab})",
                param="logit_bias",
            )
        params = SamplingParams(
            temperature=pick(body.temperature, defaults.temperature),
            top_k=pick(body.top_k, defaults.top_k),
            top_p=pick(body.top_p, defaults.top_p),
            min_p=pick(body.min_p, defaults.min_p),
            repeat_penalty=pick(body.repeat_penalty, defaults.repeat_penalty),
            repeat_last_n=pick(body.repeat_last_n, defaults.repeat_last_n),
            frequency_penalty=pick(body.frequency_penalty, defaults.frequency_penalty),
            presence_penalty=pick(body.presence_penalty, defaults.presence_penalty),
            logit_bias=bias,
            typical_p=pick(body.typical_p, defaults.typical_p),
            mirostat=pick(body.mirostat, defaults.mirostat),
            mirostat_tau=pick(body.mirostat_tau, defaults.mirostat_tau),
            mirostat_eta=pick(body.mirostat_eta, defaults.mirostat_eta),
        )
        seed = None if body.seed is None or body.seed in (-1, 2**32 - 1) else (body.seed + choice) % (2**32 - 1)
        return Sampler(params, seed)

    def speculative(
        self, body: Sampling, grammar: Grammar | None, sampler: Sampler, logprobs: int | None = None
    ) -> Speculative | None:
        """The server's --lookup / --model-draft for this request, bounded by
        its speculative.n_max / n_min (llama-server's). Where it cannot apply
        (a grammar, logprobs, a sampler verification cannot reproduce) the
        request runs without it, unless it asked for it by name: then a 400."""
        spec = self.config.speculative
        asked = [
            n for n in ("speculative.n_max", "speculative.n_min") if getattr(body, n.replace(".", "_")) is not None
        ]
        if spec is None:
            if asked:
                raise APIError(400, f"{asked[0]} needs a server started with --lookup or --model-draft", param=asked[0])
            return None
        try:
            spec = spec.with_limits(body.speculative_n_max, body.speculative_n_min)
            if grammar is not None:
                raise SpeculativeError("speculative decoding cannot be combined with a grammar or a JSON schema")
            if logprobs is not None:
                raise SpeculativeError("speculative decoding cannot be combined with logprobs")
            spec.start(sampler)  # the sampler check
        except SpeculativeError as e:
            if asked:
                raise APIError(400, str(e), param=asked[0]) from None
            return None
        return spec
