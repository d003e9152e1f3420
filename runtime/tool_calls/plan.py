"""One chat request's tools from start to end: what the template is given,
the grammar on the reply, and the reply parsed into OpenAI's message.

    plan = plan_tools(template.source, tools, tool_choice, parallel_tool_calls)  # None without tools
    messages, tools = prompt_inputs(plan, messages, template.source)  # for template.render(messages, tools=tools)
    ... generate with plan.grammar ...
    message, finish = plan.message(text, finish)      # or plan.stream() for deltas
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lamina.grammar import Grammar
from lamina.tool_calls.detect import GENERIC, tool_format
from lamina.tool_calls.errors import ToolCallError
from lamina.tool_calls.grammar import tool_grammar
from lamina.tool_calls.messages import generic_system, polyfill, template_messages, with_system
from lamina.tool_calls.parsers import PARSERS, Reply
from lamina.tool_calls.spec import ToolSpec, tool_spec
from lamina.tool_calls.stream import ToolStream


@dataclass(frozen=True)
class ToolPlan:
    spec: ToolSpec
    format: str  # lamina.tool_calls.detect's family
    grammar: Grammar | None

    def parse(self, text: str) -> Reply:
        if self.spec.choice == "none":
            return Reply(text)
        names = frozenset(f.name for f in self.spec.callable)
        return PARSERS[self.format](text, names)

    def message(self, text: str, finish_reason: str | None) -> tuple[dict[str, Any], str | None]:
        """OpenAI's assistant message and finish_reason ("tool_calls" when it calls)."""
        return reply_message(self.parse(text), finish_reason)

    def stream(self) -> ToolStream:
        return ToolStream("none" if self.spec.choice == "none" else self.format, self.parse)


def plan_tools(template_source: str, tools: Any, tool_choice: Any = None, parallel_tool_calls: Any = None):
    """None without tools; a ToolCallError for bad ones (the grammar is built,
    and its schemas checked, here)."""
    spec = tool_spec(tools, tool_choice, parallel_tool_calls)
    if spec is None:
        return None
    fmt = tool_format(template_source)
    return ToolPlan(spec, fmt, tool_grammar(fmt, spec))


def prompt_inputs(
    plan: ToolPlan | None, messages: Sequence[Mapping[str, Any]], template_source: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The messages and tools the chat template renders; a template that knows
    no tool calls gets them written as the generic format's JSON."""
    msgs = template_messages(messages)
    if tool_format(template_source) == GENERIC:
        msgs = polyfill(msgs)
    if plan is None or plan.spec.choice == "none":
        return msgs, None
    if plan.format == GENERIC:
        spec = plan.spec
        return with_system(msgs, generic_system(spec.callable, spec.parallel, spec.constrained)), None
    return msgs, plan.spec.template_tools()


def reply_grammar(plan: ToolPlan | None, requested: Grammar | None) -> Grammar | None:
    """The one constraint on the reply: the request's own (grammar,
    response_format), else the tools'. With tool_choice "auto" the request's
    own wins (the reply is then parsed from what it allows); beside a
    required call it is a ToolCallError: both cannot hold."""
    if plan is None or plan.grammar is None:
        return requested
    if requested is None:
        return plan.grammar
    if plan.spec.constrained:
        raise ToolCallError("tool_choice", "a required tool call and grammar/response_format both constrain the reply")
    return requested


def reply_message(reply: Reply, finish_reason: str | None) -> tuple[dict[str, Any], str | None]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.tool_calls:
        message["tool_calls"] = [c.openai() for c in reply.tool_calls]
        if finish_reason == "stop":
            finish_reason = "tool_calls"
    return message, finish_reason
