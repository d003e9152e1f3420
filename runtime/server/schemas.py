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
    # llama-server's per-request bounds of the server's speculative decoding (--lookup / --model-draft)
    speculative_n_max: int | None = Field(None, alias="speculative.n_max", ge=0, le=256)
    speculative_n_min: int | None = Field(None, alias="speculative.n_min", ge=0, le=256)
    # OpenAI's / llama-server's fields lamina does not implement yet
    logprobs: Any = None
    top_logprobs: Any = None
    typical_p: Any = None
    mirostat: Any = None
    tfs_z: Any = None
    n_probs: Any = None
    best_of: Any = None
    lora: Any = None

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def unsupported(self) -> list[str]:
        """Fields given with a value that would change the result and that lamina cannot honour yet."""
        harmless: dict[str, tuple[Any, ...]] = {
            "logprobs": (None, False),
            "typical_p": (None, 1.0),
            "mirostat": (None, 0),
            "tfs_z": (None, 1.0),
            "n_probs": (None, 0),
            "best_of": (None, 1),
        }
        names = [
            "logprobs",
            "top_logprobs",
            "typical_p",
            "mirostat",
            "tfs_z",
            "n_probs",
            "best_of",
            "lora",
        ]
        return [n for n in names if getattr(self, n) not in harmless.get(n, (None,))]


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


class ChatCompletionRequest(Sampling):
    messages: list[Message] = Field(..., min_length=1, max_length=4096)
    max_completion_tokens: int | None = Field(None, ge=1, le=2**31 - 1)
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    parallel_tool_calls: Any = None

    def unsupported(self) -> list[str]:
        extra = [n for n in ("tools", "tool_choice", "functions", "function_call") if getattr(self, n) is not None]
        extra += [f"messages.{i}.tool_calls" for i, m in enumerate(self.messages) if m.tool_calls]
        return super().unsupported() + extra

    def limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(Sampling):
    prompt: str | list[int] | list[str] = Field(..., min_length=0)
    echo: bool = False
    suffix: str | None = None

    def unsupported(self) -> list[str]:
        return super().unsupported() + (["suffix"] if self.suffix is not None else [])

    def limit(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else 16  # OpenAI's default for completions


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
