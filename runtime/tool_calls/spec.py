"""OpenAI's `tools`, `tool_choice` and `parallel_tool_calls`, checked once
into a ToolSpec; anything unusable is a ToolCallError naming the field."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lamina.tool_calls.errors import ToolCallError

# OpenAI's rule for function names
NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
CHOICES = ("none", "auto", "required")


@dataclass(frozen=True)
class Function:
    name: str
    description: str | None
    parameters: dict[str, Any]  # a JSON schema of type object
    raw: dict[str, Any]  # the tool as given ({"type": "function", "function": {...}}), for the template


@dataclass(frozen=True)
class ToolSpec:
    functions: tuple[Function, ...]
    choice: str  # "none" | "auto" | "required" | "function" (one named function)
    forced: str | None  # the function tool_choice names
    parallel: bool  # more than one call in a reply

    @property
    def constrained(self) -> bool:
        """The reply must be tool calls (and the grammar makes it so)."""
        return self.choice in ("required", "function")

    @property
    def callable(self) -> tuple[Function, ...]:
        """The functions the reply may call."""
        if self.forced is not None:
            return tuple(f for f in self.functions if f.name == self.forced)
        return self.functions

    def template_tools(self) -> list[dict[str, Any]] | None:
        """What the chat template is given as `tools` (none with tool_choice "none")."""
        return None if self.choice == "none" else [f.raw for f in self.functions]


def tool_spec(tools: Any, tool_choice: Any = None, parallel_tool_calls: Any = None) -> ToolSpec | None:
    """None without tools (tool_choice alone is an error, as in OpenAI's API)."""
    if tools is None or (isinstance(tools, Sequence) and not isinstance(tools, (str, bytes)) and not tools):
        if tool_choice not in (None, "none", "auto"):
            raise ToolCallError("tool_choice", f"{tool_choice!r} needs tools, and none were given")
        if parallel_tool_calls is not None and not isinstance(parallel_tool_calls, bool):
            raise ToolCallError("parallel_tool_calls", f"expected true or false, got {parallel_tool_calls!r}")
        return None
    if isinstance(tools, (str, bytes)) or not isinstance(tools, Sequence):
        raise ToolCallError("tools", f"expected a list of tools, got {type(tools).__name__}")
    functions = tuple(_function(t, f"tools[{i}]") for i, t in enumerate(tools))
    seen: set[str] = set()
    for i, f in enumerate(functions):
        if f.name in seen:
            raise ToolCallError(f"tools[{i}].function.name", f"{f.name!r} is defined twice")
        seen.add(f.name)
    if parallel_tool_calls is None:
        # llama-server's default (OpenAI's is true): small models asked for "one
        # or more" calls tend to repeat the same call until max_tokens
        parallel = False
    elif isinstance(parallel_tool_calls, bool):
        parallel = parallel_tool_calls
    else:
        raise ToolCallError("parallel_tool_calls", f"expected true or false, got {parallel_tool_calls!r}")
    choice, forced = _choice(tool_choice, seen)
    return ToolSpec(functions, choice, forced, parallel)


def _function(tool: Any, where: str) -> Function:
    if not isinstance(tool, Mapping):
        raise ToolCallError(where, f"expected {{'type': 'function', 'function': {{...}}}}, got {tool!r:.80}")
    if tool.get("type", "function") != "function":
        raise ToolCallError(f"{where}.type", f"expected 'function', got {tool.get('type')!r}")
    fn = tool.get("function")
    if not isinstance(fn, Mapping):
        raise ToolCallError(f"{where}.function", "missing: expected {'name': ..., 'parameters': {...}}")
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise ToolCallError(f"{where}.function.name", f"missing: expected the function's name, got {name!r}")
    if not NAME_RE.match(name):
        raise ToolCallError(f"{where}.function.name", f"{name!r}: expected 1-64 of a-z, A-Z, 0-9, _ . : -")
    description = fn.get("description")
    if description is not None and not isinstance(description, str):
        raise ToolCallError(f"{where}.function.description", f"expected a string, got {description!r:.80}")
    params = fn.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(params, Mapping) or params.get("type", "object") != "object":
        raise ToolCallError(
            f"{where}.function.parameters", f"expected a JSON schema of type 'object', got {params!r:.120}"
        )
    params = dict(params)
    params.setdefault("type", "object")
    raw = {"type": "function", "function": {**dict(fn), "parameters": params}}
    return Function(name, description, params, raw)


def _choice(tool_choice: Any, names: set[str]) -> tuple[str, str | None]:
    if tool_choice is None:
        return "auto", None
    if isinstance(tool_choice, str):
        if tool_choice not in CHOICES:
            raise ToolCallError(
                "tool_choice", f"expected one of {', '.join(CHOICES)} or a function, got {tool_choice!r}"
            )
        return tool_choice, None
    if isinstance(tool_choice, Mapping):
        fn = tool_choice.get("function")
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if tool_choice.get("type", "function") != "function" or not isinstance(name, str):
            raise ToolCallError(
                "tool_choice", f"expected {{'type': 'function', 'function': {{'name': ...}}}}, got {tool_choice!r:.120}"
            )
        if name not in names:
            raise ToolCallError(
                "tool_choice.function.name", f"{name!r} is not one of the tools ({', '.join(sorted(names))})"
            )
        return "function", name
    raise ToolCallError("tool_choice", f"expected a string or an object, got {type(tool_choice).__name__}")
