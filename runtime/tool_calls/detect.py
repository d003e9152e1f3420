"""Which tool-call format a chat template teaches its model, read from the
template's text (as llama.cpp's common/chat.cpp picks its handler):

- hermes: `<tool_call>{"name": ..., "arguments": ...}</tool_call>` (Qwen2.5,
  Hermes 2/3, many fine-tunes);
- llama3: a bare `{"name": ..., "parameters": ...}` object, after
  `<|python_tag|>` for built-in tools (Llama 3.1-3.3);
- mistral: `[TOOL_CALLS][{"name": ..., "arguments": ...}, ...]`;
- generic: a template that ignores `tools` (SmolLM2's, Gemma's): lamina
  describes the tools in a system message and the reply is one JSON object,
  {"tool_call": ...} or {"response": ...}, as llama.cpp's generic handler."""

from __future__ import annotations

HERMES, LLAMA3, MISTRAL, GENERIC = "hermes", "llama3", "mistral", "generic"


def tool_format(template_source: str) -> str:
    """The family of the template; GENERIC for a template lamina has no parser
    for (its own tool rendering, if any, is then left out: the generic system
    message describes the tools instead)."""
    src = template_source
    if "[TOOL_CALLS]" in src:
        return MISTRAL
    if "<tool_call>" in src:
        return HERMES
    if "<|python_tag|>" in src or ("<|start_header_id|>" in src and '"parameters"' in src):
        return LLAMA3
    return GENERIC
