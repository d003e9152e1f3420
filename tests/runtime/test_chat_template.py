"""Chat templates: same text as transformers, ChatML fallback, sandbox, limits."""

from __future__ import annotations

import datetime
import functools

import pytest

from lamina.chat_template import CHATML_TEMPLATE, ChatTemplate, ChatTemplateError
from lamina.model_cache import fetch_model
from support.template_oracle import transformers_render
from support.vocab_vectors import model_tokenizer

CONVERSATIONS = [
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi!"}],
    [{"role": "user", "content": "only a user turn"}],
    [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": 'And in 日本語? 😀 <b>bold</b> "quotes"'},
    ],
    [
        {"role": "system", "content": "  padded system  \n"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": ""},
    ],
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city (°C)",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


@functools.cache
def smollm_hf():
    transformers = pytest.importorskip("transformers")
    path = fetch_model("smollm2-135m-instruct")
    return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def template_for(name: str) -> ChatTemplate:
    return ChatTemplate.from_metadata(model_tokenizer(name)[1])


@pytest.mark.parametrize("generation_prompt", [True, False])
@pytest.mark.parametrize("conversation", range(len(CONVERSATIONS)))
def test_smollm2_matches_transformers(conversation: int, generation_prompt: bool) -> None:
    messages = CONVERSATIONS[conversation]
    ours = template_for("smollm2-135m-instruct").render(messages, add_generation_prompt=generation_prompt)
    theirs = smollm_hf().apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    assert ours == theirs


@pytest.mark.parametrize("tools", [None, TOOLS])
@pytest.mark.parametrize("conversation", range(len(CONVERSATIONS)))
def test_qwen_tools_template_matches_transformers(conversation: int, tools: list | None) -> None:
    template = template_for("qwen2.5-coder-0.5b")
    messages = CONVERSATIONS[conversation]
    ours = template.render(messages, add_generation_prompt=True, tools=tools)
    assert ours == transformers_render(template, messages, tools)


def test_chatml_fallback() -> None:
    # the real Gemma file has no template; as another architecture it gets ChatML
    gemma_meta = model_tokenizer("gemma-3-270m")[1]
    assert "tokenizer.chat_template" not in gemma_meta
    template = ChatTemplate.from_metadata({**gemma_meta, "general.architecture": "llama"})
    assert template.source == CHATML_TEMPLATE
    assert template.render(CONVERSATIONS[0]) == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
    )
    assert template.render(CONVERSATIONS[0], add_generation_prompt=False).endswith("Hi!<|im_end|>\n")


def test_real_gemma_file_gets_gemmas_template() -> None:
    gemma_meta = model_tokenizer("gemma-3-270m")[1]
    assert gemma_meta.get("general.architecture") == "gemma3"
    text = ChatTemplate.from_metadata(gemma_meta).render(CONVERSATIONS[0])
    assert text == "<bos><start_of_turn>user\nYou are terse.\n\nHi!<end_of_turn>\n<start_of_turn>model\n"


def test_bos_and_eos_strings_come_from_the_vocabulary() -> None:
    meta = model_tokenizer("gemma-3-270m")[1]
    template = ChatTemplate.from_metadata(meta, override="{{ bos_token }}|{{ eos_token }}")
    assert template.render([]) == "<bos>|<eos>"
    bare = ChatTemplate("{{ bos_token is defined }}")
    assert bare.render([]) == "False"


def test_override_file(tmp_path) -> None:
    meta = model_tokenizer("smollm2-135m-instruct")[1]
    path = tmp_path / "t.jinja"
    path.write_text("{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}", encoding="utf-8")
    template = ChatTemplate.from_file(path, meta)
    assert template.render(CONVERSATIONS[1]) == "[user] only a user turn\n"
    with pytest.raises(ChatTemplateError, match="missing.jinja: cannot read chat template"):
        ChatTemplate.from_file(tmp_path / "missing.jinja", meta)


def test_sandbox_blocks_python_internals() -> None:
    template = ChatTemplate("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(ChatTemplateError, match="sandbox"):
        template.render([])


def test_raise_exception_gives_its_message() -> None:
    template = ChatTemplate("{% if messages[0]['role'] != 'user' %}{{ raise_exception('x') }}{% endif %}ok")
    assert template.render([{"role": "user", "content": ""}]) == "ok"
    with pytest.raises(ChatTemplateError) as caught:
        template.render([{"role": "assistant", "content": ""}])
    assert str(caught.value) == "x"


def test_output_cap() -> None:
    template = ChatTemplate("{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}")
    with pytest.raises(ChatTemplateError, match="exceeds 1048576 bytes"):
        template.render([])
    assert len(ChatTemplate("{{ 'y' * 10 }}").render([], max_bytes=10)) == 10


def test_syntax_and_render_errors_name_the_problem() -> None:
    with pytest.raises(ChatTemplateError, match="syntax error at line 2"):
        ChatTemplate("ok\n{% for m in messages %}")
    with pytest.raises(ChatTemplateError, match="rendering failed: .*"):
        ChatTemplate("{{ messages[5]['content'] + 1 }}").render([])
    with pytest.raises(ChatTemplateError, match=r"messages\[0\] must be a dict"):
        ChatTemplate("").render(["hello"])  # type: ignore[list-item]


def test_helpers_as_in_transformers() -> None:
    template = ChatTemplate(
        "{{ messages | tojson }}|{{ strftime_now('%Y') }}|{% generation %}gen{% endgeneration %}"
        "|{% for i in range(3) %}{% if i == 1 %}{% continue %}{% endif %}{{ i }}{% endfor %}"
    )
    out = template.render([{"role": "user", "content": "é <&>"}])
    assert out == f'[{{"role": "user", "content": "é <&>"}}]|{datetime.datetime.now().year}|gen|02'


def test_template_cannot_mutate_messages() -> None:
    messages = [{"role": "user", "content": "a"}]
    with pytest.raises(ChatTemplateError, match="sandbox"):
        ChatTemplate("{{ messages.append({'role': 'x'}) }}").render(messages)
    assert messages == [{"role": "user", "content": "a"}]


def test_gemma3_without_a_template_gets_gemmas_own() -> None:
    meta = {
        "general.architecture": "gemma3",
        "tokenizer.ggml.tokens": ["<pad>", "<eos>", "<bos>"],
        "tokenizer.ggml.bos_token_id": 2,
        "tokenizer.ggml.eos_token_id": 1,
    }
    t = ChatTemplate.from_metadata(meta)
    text = t.render(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": " Hi "},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Bye"},
        ],
        add_generation_prompt=True,
    )
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello.<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    )
    with pytest.raises(ChatTemplateError, match="alternate"):
        t.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    # other architectures without a template still get ChatML, as llama.cpp does
    assert "<|im_start|>" in ChatTemplate.from_metadata({**meta, "general.architecture": "llama"}).render(
        [{"role": "user", "content": "x"}]
    )
