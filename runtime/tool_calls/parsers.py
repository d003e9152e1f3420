"""A model's reply as OpenAI's message: text content and tool calls, one
parser per template family (lamina.tool_calls.detect). A reply that does not
parse (malformed JSON, an unknown function, a call cut by max_tokens) is
text content, never an error: the caller sees what the model wrote."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from lamina.tool_calls.detect import GENERIC, HERMES, LLAMA3, MISTRAL


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # a JSON object's text, as OpenAI's function.arguments
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")

    def openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class Reply:
    content: str | None  # None when the reply is only tool calls
    tool_calls: tuple[ToolCall, ...] = ()


def _text(text: str) -> Reply:
    return Reply(text, ())


def _content(parts: Iterable[str]) -> str | None:
    # trailing whitespace dropped, leading kept: what a stream has sent by then (lamina.tool_calls.stream)
    text = "".join(parts).rstrip()
    return text if text.strip() else None


def _arguments(value: Any) -> str | None:
    """The arguments as OpenAI's JSON text; None when they are not an object."""
    if isinstance(value, str):  # some models write the object as a JSON string
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if not isinstance(value, dict):
        return None
    return json.dumps(value, ensure_ascii=False)


def _call(obj: Any, args_keys: tuple[str, ...], names: frozenset[str] | None) -> ToolCall | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    if names is not None and obj["name"] not in names:
        return None
    key = next((k for k in args_keys if k in obj), None)
    args = _arguments(obj[key]) if key is not None else "{}"
    if args is None:
        return None
    call_id = obj.get("id")
    if isinstance(call_id, str) and call_id:
        return ToolCall(obj["name"], args, call_id)
    return ToolCall(obj["name"], args)


# ------------------------------------------------------------------ hermes
HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
_HERMES_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.S)


def parse_hermes(text: str, names: frozenset[str] | None = None) -> Reply:
    """`text <tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call> ...`;
    small models often leave the tags out: a reply that is only such objects
    (of known functions) is calls too, as llama.cpp's Hermes parser takes them."""
    if HERMES_OPEN not in text:
        if _FENCE_OPEN.sub("", text.lstrip()).startswith("{"):
            return _bare_objects(text, ("arguments", "parameters"), names)
        return _text(text)
    calls, outside, pos = [], [], 0
    for m in _HERMES_BLOCK.finditer(text):
        try:
            obj = json.loads(m.group(1))
        except json.JSONDecodeError:
            return _text(text)
        call = _call(obj, ("arguments", "parameters"), names)
        if call is None:
            return _text(text)
        outside.append(text[pos : m.start()])
        calls.append(call)
        pos = m.end()
    outside.append(text[pos:])
    return Reply(_content(outside), tuple(calls))


# ------------------------------------------------------------------ llama3
LLAMA3_TAG = "<|python_tag|>"


def parse_llama3(text: str, names: frozenset[str] | None = None) -> Reply:
    """`{"name": ..., "parameters": {...}}` (several joined by ';'), maybe
    after <|python_tag|> (a control token: the detokenizer may have dropped it)."""
    body = text.strip()
    if body.startswith(LLAMA3_TAG):
        body = body[len(LLAMA3_TAG) :].lstrip()
    if not body.startswith("{"):
        return _text(text)
    return _bare_objects(text, ("parameters", "arguments"), names, body)


# a reply a small model put in a markdown fence: ```json {...} ``` (the closing fence alone, too)
_FENCE_OPEN = re.compile(r"^```(?:json)?\s*")
_FENCE_CLOSE = re.compile(r"\s*```$")


def _bare_objects(text: str, args_keys: tuple[str, ...], names: frozenset[str] | None, body: str = "") -> Reply:
    """A reply that is only call objects, separated by spaces or ';', maybe in a code fence (else text)."""
    body = _FENCE_CLOSE.sub("", _FENCE_OPEN.sub("", body or text.strip()))
    decoder, calls, pos = json.JSONDecoder(), [], 0
    while pos < len(body):
        try:
            obj, end = decoder.raw_decode(body, pos)
        except json.JSONDecodeError:
            return _text(text)
        call = _call(obj, args_keys, names)
        if call is None:
            return _text(text)
        calls.append(call)
        pos = end
        while pos < len(body) and body[pos] in " \t\r\n;":
            pos += 1
    return Reply(None, tuple(calls))


# ----------------------------------------------------------------- mistral
MISTRAL_TAG = "[TOOL_CALLS]"


def parse_mistral(text: str, names: frozenset[str] | None = None) -> Reply:
    """`content[TOOL_CALLS][{"name": ..., "arguments": {...}, "id": ...}, ...]`;
    without the tag (a control token the detokenizer may drop) a reply that is
    such a list and nothing else."""
    if MISTRAL_TAG in text:
        head, _, body = text.partition(MISTRAL_TAG)
    elif text.lstrip().startswith("[{"):
        head, body = "", text
    else:
        return _text(text)
    try:
        obj, end = json.JSONDecoder().raw_decode(body.strip())
    except json.JSONDecodeError:
        return _text(text)
    items = obj if isinstance(obj, list) else [obj]
    calls = [_call(o, ("arguments", "parameters"), names) for o in items]
    if not calls or any(c is None for c in calls):
        return _text(text)
    return Reply(_content([head, body.strip()[end:]]), tuple(c for c in calls if c is not None))


# ----------------------------------------------------------------- generic
def parse_generic(text: str, names: frozenset[str] | None = None) -> Reply:
    """One JSON object: {"tool_call": {...}}, {"tool_calls": [...]} or {"response": "..."}."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return _text(text)
    if not isinstance(obj, dict):
        return _text(text)
    if isinstance(obj.get("response"), str) and len(obj) == 1:
        return Reply(obj["response"], ())
    items = obj.get("tool_calls") if "tool_calls" in obj else [obj.get("tool_call")]
    if not isinstance(items, list) or not items:
        return _text(text)
    calls = [_call(o, ("arguments", "parameters"), names) for o in items]
    if any(c is None for c in calls):
        return _text(text)
    return Reply(None, tuple(c for c in calls if c is not None))


PARSERS: dict[str, Callable[[str, frozenset[str] | None], Reply]] = {
    HERMES: parse_hermes,
    LLAMA3: parse_llama3,
    MISTRAL: parse_mistral,
    GENERIC: parse_generic,
}

# where a tool call may begin in free text: a stream holds back what follows
OPENINGS = {HERMES: HERMES_OPEN, LLAMA3: "{", MISTRAL: MISTRAL_TAG, GENERIC: "{"}
