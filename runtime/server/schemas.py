"""Request bodies of the OpenAI-compatible API, with the ranges every field
must fall in (pydantic refuses anything else with a 400 naming the field).
Unknown fields are ignored, as OpenAI's API does; known fields lamina does
not implement yet are refused when they would change the result
(`unsupported()`), never silently dropped."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_N = 8  # choices per request: each is a sequence of its own
MAX_STOPS = 16
MAX_TEMPERATURE = 100.0  # past ~10 the distribution is flat anyway; 1e9 is a mistake
MAX_TOP_LOGPROBS = 20  # OpenAI's cap (lamina.logprobs)

Stop = Annotated[str, StringConstraints(max_length=256)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class StreamOptions(_Body):
    include_usage: bool = False


class Sampling(_Body):
    """What chat and text completions share."""

    model: str | None = Field(None, max_length=512)
    max_tokens: int | None = Field(None, ge=1, le=2**31 - 1)
    temperature: float | None = Field(None, ge=0.0, le=MAX_TEMPERATURE)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0, le=2**31 - 1)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    seed: int | None = Field(None, ge=-1, le=2**32 - 1)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    repeat_penalty: float | None = Field(None, gt=0.0, le=10.0)
    repeat_last_n: int | None = Field(None, ge=-1, le=2**31 - 1)
    stop: Stop | list[Stop] | None = Field(None, max_length=MAX_STOPS)
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # constrained output (lamina.grammar checks them: a bad one is a 400 naming it)
    response_format: dict[str, Any] | None = None  # OpenAI's
    grammar: str | None = Field(None, max_length=1 << 20)  # llama-server's: GBNF text
    json_schema: dict[str, Any] | bool | None = None  # llama-server's
    logit_bias: dict[str, float] | None = Field(None, max_length=1 << 16)  # OpenAI's: token id (a string) -> bias
    # llama-server's samplers (lamina.sampling)
    typical_p: float | None = Field(None, gt=0.0, le=1.0)
    mirostat: int | None = Field(None, ge=0, le=2)
    mirostat_tau: float | None = Field(None, ge=0.0, le=100.0)
    mirostat_eta: float | None = Field(None, ge=0.0, le=1.0)
    # llama-server's per-request bounds of the server's speculative decoding (--lookup / --model-draft)
    speculative_n_max: int | None = Field(None, alias="speculative.n_max", ge=0, le=256)
    speculative_n_min: int | None = Field(None, alias="speculative.n_min", ge=0, le=256)
    # OpenAI's / llama-server's fields lamina does not implement yet (refused unless harmless: NOT_YET)
    tfs_z: Any = None
    n_probs: Any = None
    best_of: Any = None
    lora: Any = None  # llama-server's per-request adapter scales (lora_routes.py checks them)
    xtc_probability: Any = None
    dry_multiplier: Any = None
    top_n_sigma: Any = None
    dynatemp_range: Any = None
    adaptive_target: Any = None
    ignore_eos: Any = None
    min_keep: Any = None
    samplers: Any = None
    post_sampling_probs: Any = None
    return_tokens: Any = None
    t_max_predict_ms: Any = None
    t_max_prompt_ms: Any = None
    n_indent: Any = None
    response_fields: Any = None
    continue_final_message: Any = None

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def unsupported(self) -> list[str]:
        """Fields given with a value that would change the result and that lamina cannot honour yet."""
        return [n for n, harmless in NOT_YET.items() if getattr(self, n) not in harmless]


# llama-server's / OpenAI's fields lamina does not implement, with the values
# that change nothing (their defaults, "off"); any other value is a 400
NOT_YET: dict[str, tuple[Any, ...]] = {
    "tfs_z": (None, 1.0),
    "n_probs": (None, 0),  # llama-server's post-sampling probabilities: use logprobs / top_logprobs
    "best_of": (None, 1),
    "xtc_probability": (None, 0.0),
    "dry_multiplier": (None, 0.0),
    "top_n_sigma": (None, -1.0),
    "dynatemp_range": (None, 0.0),
    "adaptive_target": (None, -1.0),
    "ignore_eos": (None, False),
    "min_keep": (None, 0, 1),
    "samplers": (None,),
    "post_sampling_probs": (None, False),
    "return_tokens": (None, False),
    "t_max_predict_ms": (None, 0, -1),
    "t_max_prompt_ms": (None, 0, -1),
    "n_indent": (None, 0),
    "response_fields": (None, []),
    "continue_final_message": (None, False),
}


class TextPart(_Body):
    type: Literal["text"]
    text: str


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: Any = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""

    def template_message(self) -> dict[str, Any]:
        """The message as the chat template reads it (lamina.tool_calls.messages checks the tool fields)."""
        out: dict[str, Any] = {"role": self.role, "content": self.text()}
        if self.name:
            out["name"] = self.name
        if self.tool_calls is not None:
            out["tool_calls"] = self.tool_calls
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


class ChatCompletionRequest(Sampling):
    messages: list[Message] = Field(..., min_length=1, max_length=4096)
    max_completion_tokens: int | None = Field(None, ge=1, le=2**31 - 1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)  # needs logprobs: true
    # function calling (lamina.tool_calls checks them: a bad one is a 400 naming the field)
    tools: list[Any] | None = Field(None, max_length=512)
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    functions: Any = None  # OpenAI's deprecated predecessors of tools / tool_choice
    function_call: Any = None

    def unsupported(self) -> list[str]:
        extra = [n for n in ("functions", "function_call") if getattr(self, n) is not None]
        return super().unsupported() + extra

    def limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def n_logprobs(self) -> int | None:
        """Alternatives per token to report, or None for no logprobs."""
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(Sampling):
    prompt: str | list[int] | list[str] = Field(..., min_length=0)
    echo: bool = False
    suffix: str | None = None  # fill-in-the-middle (lamina.fim)
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)  # the legacy N

    def limit(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else 16  # OpenAI's default for completions

    def n_logprobs(self) -> int | None:
        return self.logprobs


class EmbeddingRequest(_Body):
    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = Field(None, max_length=512)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class TokenizeRequest(_Body):
    content: str
    add_special: bool = False
    with_pieces: bool = False


class DetokenizeRequest(_Body):
    tokens: list[int] = Field(..., max_length=1 << 20)
