"""The grammar of a reply with tools, per template family, as llguidance
Lark with the functions' JSON schemas embedded (`%json`):

- tool_choice "required" or a named function: the reply is tool calls and
  nothing else, the arguments valid against their function's `parameters`;
- "auto": a lazy grammar, as llama.cpp's: free text until the family's
  opening (`<tool_call>`, `[TOOL_CALLS]`), then a valid call; families whose
  call is the whole reply (llama3) are parsed from free text instead;
- the generic family (templates that ignore tools) always answers one JSON
  object: {"tool_call": ...} or, unless a call is required, {"response": ...}."""

from __future__ import annotations

import json
from typing import Any

from lamina.grammar import JSON_OPTIONS, Grammar, GrammarError
from lamina.tool_calls.detect import GENERIC, HERMES, LLAMA3, MISTRAL
from lamina.tool_calls.errors import ToolCallError
from lamina.tool_calls.spec import Function, ToolSpec

_OPTIONS = {"x-guidance": JSON_OPTIONS}


def _object(props: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """An object with exactly these properties, in this order."""
    return {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
        **(extra or {}),
    }


def closed(parameters: dict[str, Any]) -> dict[str, Any]:
    """The parameters without properties they do not name, unless they say
    otherwise (as llama.cpp's schema converter and OpenAI's strict mode): what
    validates this validates the original, and a small model cannot ramble
    on in made-up keys."""
    if "properties" in parameters and "additionalProperties" not in parameters:
        return {**parameters, "additionalProperties": False}
    return parameters


def call_schema(functions: tuple[Function, ...], args_key: str) -> dict[str, Any]:
    """{"name": <one of them>, args_key: <its parameters>}"""
    options = [_object({"name": {"const": f.name}, args_key: closed(f.parameters)}) for f in functions]
    return options[0] if len(options) == 1 else {"anyOf": options}


def _json(schema: dict[str, Any]) -> str:
    return "%json " + json.dumps({**schema, **_OPTIONS})


def tool_grammar(fmt: str, spec: ToolSpec) -> Grammar | None:
    """The constraint on the reply, None where the reply is free text."""
    if spec.choice == "none":
        return None
    try:
        return _grammar(fmt, spec)
    except ToolCallError:
        for i, f in enumerate(spec.functions):  # name the tool whose schema llguidance refused
            try:
                Grammar.from_json_schema(f.parameters)
            except GrammarError as e:
                raise ToolCallError(f"tools[{i}].function.parameters", str(e)) from None
        raise


def _grammar(fmt: str, spec: ToolSpec) -> Grammar | None:
    functions = spec.callable
    if fmt == GENERIC:
        return _checked(_generic(functions, spec))
    if not spec.constrained and fmt == LLAMA3:
        return None
    # a call: its opening (what triggers the lazy grammar), then the rest
    body: dict[str, Any]
    if fmt == HERMES:
        opening, rest, sep = '"<tool_call>"', '"\\n" call_json "\\n</tool_call>"', '"\\n"'
        body = call_schema(functions, "arguments")
    elif fmt == LLAMA3:
        opening, rest, sep = "", "call_json", '";"'
        body = call_schema(functions, "parameters")
    elif fmt == MISTRAL:  # one list holds every call
        opening, rest, sep = '"[TOOL_CALLS]"', "call_json", ""
        items = call_schema(functions, "arguments")
        body = {"type": "array", "items": items, "minItems": 1, **({} if spec.parallel else {"maxItems": 1})}
    else:
        raise ValueError(f"unknown tool-call format {fmt!r}")
    many = spec.parallel and sep
    if spec.constrained:
        lines = [f"start: call ({sep} call)*" if many else "start: call", f"call: {opening} {rest}"]
    else:  # auto: free text, then calls once the opening is written (llguidance's lazy lexeme)
        lines = [
            "start: call* TEXT" if many else "start: call? TEXT",
            f"call_open[lazy]: TEXT {opening}",
            f"call: call_open {rest}",
            "TEXT: /(.|\\n)*/",
        ]
    return _checked("\n".join(["%llguidance {}", *lines, f"call_json: {_json(body)}"]) + "\n")


def _generic(functions: tuple[Function, ...], spec: ToolSpec) -> str:
    call = call_schema(functions, "arguments")
    if spec.parallel:
        calls = _object({"tool_calls": {"type": "array", "items": call, "minItems": 1}})
    else:
        calls = _object({"tool_call": call})
    options = [calls] if spec.constrained else [calls, _object({"response": {"type": "string"}})]
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return "%llguidance {}\nstart: reply\nreply: " + _json(schema) + "\n"


def _checked(lark: str) -> Grammar:
    try:
        return Grammar.from_lark(lark)
    except GrammarError as e:
        raise ToolCallError("tools", f"a function's parameters cannot be turned into a grammar: {e}") from None
