"""OpenAI's chat messages as chat templates read them. An assistant turn's
`tool_calls` carry their arguments as JSON text; templates (Qwen's, Llama's,
transformers' convention) expect the object and write it with `tojson`, so
the text is parsed back here. `tool` messages keep tool_call_id (and name)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from lamina.tool_calls.errors import ToolCallError
from lamina.tool_calls.spec import Function


def template_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A copy with tool calls in the template's shape; a malformed one is a ToolCallError naming it."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        return messages  # the template's own check names the problem
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            out.append(m)
            continue
        m = dict(m)
        calls = m.get("tool_calls")
        if calls is not None:
            m["tool_calls"] = [_call(c, f"messages[{i}].tool_calls[{j}]") for j, c in enumerate(_list(calls, i))]
        if m.get("role") == "tool":
            tid = m.get("tool_call_id")
            if tid is not None and not isinstance(tid, str):
                raise ToolCallError(f"messages[{i}].tool_call_id", f"expected a string, got {tid!r:.80}")
            content = m.get("content")
            if content is None:
                raise ToolCallError(f"messages[{i}].content", "a tool message needs the tool's result as content")
            if not isinstance(content, str):  # a result given as JSON: templates concatenate text
                m["content"] = json.dumps(content, ensure_ascii=False)
        out.append(m)
    return out


def _list(calls: Any, i: int) -> list[Any]:
    if isinstance(calls, (str, bytes)) or not isinstance(calls, Sequence):
        raise ToolCallError(f"messages[{i}].tool_calls", f"expected a list, got {type(calls).__name__}")
    return list(calls)


def _call(call: Any, where: str) -> dict[str, Any]:
    fn = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
        raise ToolCallError(f"{where}.function", f"expected {{'name': ..., 'arguments': ...}}, got {call!r:.120}")
    args = fn.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            raise ToolCallError(f"{where}.function.arguments", f"not valid JSON ({e})") from None
    out = dict(call)
    out.setdefault("type", "function")
    out["function"] = {**dict(fn), "arguments": args}
    return out


GENERIC_SYSTEM = (
    "You can call these tools:\n{tools}\n\n"
    "Respond in JSON: either a tool call, {call_shape}, or a reply to the user, "
    '{{"response": "..."}}.'
)


def generic_system(functions: Sequence[Function], parallel: bool, required: bool) -> str:
    """The system text that describes the tools to a template that cannot (llama.cpp's generic format)."""
    tools = "\n".join(json.dumps(f.raw["function"], ensure_ascii=False) for f in functions)
    call = '{"tool_call": {"name": ..., "arguments": {...}}}'
    if parallel:
        call = '{"tool_calls": [{"name": ..., "arguments": {...}}, ...]}'
    text = GENERIC_SYSTEM.format(tools=tools, call_shape=call)
    return text.split("\n\nRespond")[0] + f"\n\nRespond in JSON with a tool call: {call}." if required else text


def with_system(messages: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """The text added to the first system message, or as one in front."""
    if messages and isinstance(messages[0], dict) and messages[0].get("role") == "system":
        first = dict(messages[0])
        first["content"] = f"{first.get('content') or ''}\n\n{text}".lstrip()
        return [first, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def polyfill(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For a template that knows neither tool calls nor the tool role (the
    generic format's): each assistant call written as the JSON the generic
    format answers with, each run of tool results as one user turn, so roles
    still alternate (minja's polyfills, which llama.cpp applies, do the same)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if not isinstance(m, dict):
            out.append(m)
            continue
        if m.get("role") == "assistant" and m.get("tool_calls"):
            calls = [
                {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
                | ({"id": c["id"]} if isinstance(c.get("id"), str) else {})
                for c in m["tool_calls"]
            ]
            body = {"tool_call": calls[0]} if len(calls) == 1 else {"tool_calls": calls}
            text = json.dumps(body, ensure_ascii=False)
            content = m.get("content")
            out.append({"role": "assistant", "content": f"{content}\n{text}" if content else text})
        elif m.get("role") == "tool":
            result = {"tool_response": {"tool_call_id": m.get("tool_call_id"), "content": m.get("content")}}
            text = json.dumps(result, ensure_ascii=False)
            if out and out[-1].get("role") == "user" and out[-1].get("content", "").startswith('{"tool_response"'):
                out[-1] = {"role": "user", "content": out[-1]["content"] + "\n" + text}
            else:
                out.append({"role": "user", "content": text})
        else:
            out.append(m)
    return out
