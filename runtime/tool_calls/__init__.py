"""Tool calls (OpenAI's function calling) for chat completions: tools checked
(spec), the template family (detect), the grammar on the reply (grammar), the
reply parsed (parsers), streamed (stream), all of it per request (plan)."""

from lamina.tool_calls.errors import ToolCallError
from lamina.tool_calls.plan import ToolPlan, plan_tools, prompt_inputs, reply_grammar, reply_message

__all__ = ["ToolCallError", "ToolPlan", "plan_tools", "prompt_inputs", "reply_grammar", "reply_message"]
