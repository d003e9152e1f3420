"""The one error of tool calls: a bad `tools`, `tool_choice`,
`parallel_tool_calls` or tool message, naming the field (the server's 400
carries it as `param`)."""

from __future__ import annotations

from lamina.errors import LaminaError


class ToolCallError(LaminaError, ValueError):
    """A tool definition, a tool choice or a tool-call message that cannot be
    used; `field` is its path in the request (`tools[1].function.name`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
