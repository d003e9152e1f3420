"""Random chat templates and messages: a render returns text no larger than
its cap, or a ChatTemplateError (syntax, sandbox, raise_exception, size,
deadline); nothing else escapes, nothing takes long.

Input: template source, then NUL, then messages separated by NUL, each a role
byte and its content; the first byte of the template picks add_generation_prompt."""

from __future__ import annotations

import time

from lamina.chat_template import ChatTemplate, ChatTemplateError

ROLES = ("system", "user", "assistant", "tool", "developer", "", "model")
MAX_BYTES = 1 << 16
MAX_SECONDS = 0.5


def setup() -> None:
    pass


def one_input(data: bytes) -> None:
    source, _, rest = data.partition(b"\0")
    text = source.decode("utf-8", "replace")
    messages = []
    for part in rest.split(b"\0")[:16] if rest else []:
        role = ROLES[part[0] % len(ROLES)] if part else "user"
        messages.append({"role": role, "content": part[1:].decode("utf-8", "replace")})
    t0 = time.perf_counter()
    try:
        template = ChatTemplate(text, bos_token="<s>", eos_token="</s>")
        out = template.render(
            messages,
            add_generation_prompt=bool(source[:1] and source[0] & 1),
            max_bytes=MAX_BYTES,
            max_seconds=MAX_SECONDS,
        )
    except ChatTemplateError:
        pass
    else:
        assert isinstance(out, str) and len(out.encode()) <= MAX_BYTES
    took = time.perf_counter() - t0
    assert took < MAX_SECONDS + 1.0, f"render took {took:.2f} s"
