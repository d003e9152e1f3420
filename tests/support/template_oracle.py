"""transformers' rendering of a chat template (the oracle lamina's
ChatTemplate is compared with): render_jinja_template, which is what
apply_chat_template runs without loading a tokenizer (30 s for Qwen)."""

from __future__ import annotations

from typing import Any

import pytest


def transformers_render(template: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
    """template (a lamina ChatTemplate: its source, bos and eos) rendered by transformers for
    messages and tools, with the generation prompt; the test is skipped without transformers"""
    utils = pytest.importorskip("transformers.utils.chat_template_utils")
    return utils.render_jinja_template(
        conversations=[messages],
        tools=tools,
        chat_template=template.source,
        add_generation_prompt=True,
        bos_token=template.bos_token,
        eos_token=template.eos_token,
    )[0][0]
