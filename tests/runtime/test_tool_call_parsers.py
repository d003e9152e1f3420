"""Tool-call parsing per template family on literal model outputs, the
streamed deltas against the non-streamed parse, and bad tools as errors
naming the field. No model: these are the parsers and checks alone."""

from __future__ import annotations

import json

import pytest

from lamina.tool_calls import ToolCallError, plan_tools
from lamina.tool_calls.detect import GENERIC, HERMES, LLAMA3, MISTRAL, tool_format
from lamina.tool_calls.parsers import PARSERS
from lamina.tool_calls.spec import tool_spec
from lamina.tool_calls.stream import ToolStream

NAMES = frozenset({"get_weather", "add"})
WEATHER = {"city": "Paris", "unit": "celsius"}


def calls(reply):
    return [(c.name, json.loads(c.arguments)) for c in reply.tool_calls]


# ------------------------------------------------------------------ parsers
@pytest.mark.parametrize(
    "fmt, text, content, expected",
    [
        # Qwen2.5 / Hermes: tags, text before, two calls, tags left out by a small model
        (
            HERMES,
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>',
            None,
            [("get_weather", WEATHER)],
        ),
        (
            HERMES,
            'Let me check.\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>\n'
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>',
            "Let me check.",
            [("add", {"a": 1, "b": 2}), ("get_weather", WEATHER)],
        ),
        (HERMES, '{"name": "add", "arguments": {"a": 1, "b": 2}}', None, [("add", {"a": 1, "b": 2})]),
        (HERMES, '```json\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n```', None, [("add", {"a": 1, "b": 2})]),
        (HERMES, '{"name": "add", "arguments": {"a": 1, "b": 2}}\n```', None, [("add", {"a": 1, "b": 2})]),
        # Llama 3.x: bare JSON with "parameters", after <|python_tag|> or not, ';'-joined
        (
            LLAMA3,
            '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}',
            None,
            [("get_weather", WEATHER)],
        ),
        (
            LLAMA3,
            '<|python_tag|>{"name": "add", "parameters": {"a": 1, "b": 2}}; {"name": "add", "parameters": '
            '{"a": 3, "b": 4}}',
            None,
            [("add", {"a": 1, "b": 2}), ("add", {"a": 3, "b": 4})],
        ),
        # Mistral: [TOOL_CALLS] then a list, with ids; the tag may have been dropped as a control token
        (
            MISTRAL,
            'On it.[TOOL_CALLS][{"name": "add", "arguments": {"a": 1, "b": 2}, "id": "abcDEF123"}]',
            "On it.",
            [("add", {"a": 1, "b": 2})],
        ),
        (
            MISTRAL,
            '[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}]',
            None,
            [("get_weather", WEATHER)],
        ),
        # generic (templates without tools): one JSON object
        (GENERIC, '{"tool_call": {"name": "add", "arguments": {"a": 1, "b": 2}}}', None, [("add", {"a": 1, "b": 2})]),
        (GENERIC, '{"response": "Hello!"}', "Hello!", []),
    ],
)
def test_parsers_on_model_outputs(fmt, text, content, expected):
    reply = PARSERS[fmt](text, NAMES)
    assert reply.content == content
    assert calls(reply) == expected
    assert all(c.id for c in reply.tool_calls)


def test_mistral_keeps_the_models_call_id():
    reply = PARSERS[MISTRAL]('[TOOL_CALLS][{"name": "add", "arguments": {"a": 1}, "id": "abcDEF123"}]', NAMES)
    assert reply.tool_calls[0].id == "abcDEF123"


@pytest.mark.parametrize(
    "fmt, text",
    [
        (HERMES, '<tool_call>\n{"name": "add", "arguments": {"a": 1,}\n</tool_call>'),  # malformed JSON
        (HERMES, '<tool_call>\n{"name": "add", "arguments": {"a": 1'),  # cut by max_tokens
        (HERMES, '<tool_call>\n{"name": "rm_rf", "arguments": {}}\n</tool_call>'),  # not a tool
        (HERMES, '<tool_call>\n["add"]\n</tool_call>'),
        (HERMES, '{"name": "add", "arguments": 3}'),
        (HERMES, "The answer is {a} + {b}."),
        (LLAMA3, '{"name": "add", "parameters": {"a": 1}} trailing words'),
        (LLAMA3, '{"nam": "add"}'),
        (MISTRAL, '[TOOL_CALLS][{"name": "add", "arguments": '),
        (MISTRAL, "[1, 2, 3]"),
        (GENERIC, '{"tool_call": {"name": "add", "arguments": {"a": 1}'),
        (GENERIC, "just text"),
    ],
)
def test_a_reply_that_does_not_parse_is_text(fmt, text):
    reply = PARSERS[fmt](text, NAMES)
    assert reply.tool_calls == ()
    assert reply.content == text


# ---------------------------------------------------------------- detection
def test_formats_are_read_from_the_template_text():
    assert tool_format("{% if tools %}<tool_call>{{ tool | tojson }}</tool_call>{% endif %}") == HERMES
    assert tool_format('<|start_header_id|>ipython{{ "parameters" }}<|python_tag|>') == LLAMA3
    assert tool_format("{% if tools %}[AVAILABLE_TOOLS]{{ tools }}[/AVAILABLE_TOOLS]{% endif %}[TOOL_CALLS]") == MISTRAL
    assert tool_format("{% for m in messages %}{{ m.content }}{% endfor %}") == GENERIC


# ---------------------------------------------------------------- streaming
def _stream_pieces(fmt, text, size):
    stream = ToolStream(fmt, lambda t: PARSERS[fmt](t, NAMES))
    deltas = []
    for i in range(0, len(text), size):
        deltas += stream.feed(text[i : i + size])
    deltas += stream.finish()
    return deltas


@pytest.mark.parametrize(
    "fmt, text",
    [
        (HERMES, 'Let me check.\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'),
        (HERMES, '  \n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>\n'),
        (HERMES, "Plain text < with a less-than and <tool but no call.  "),
        (HERMES, '{"name": "add", "arguments": {"a": 1, "b": 2}}'),
        (HERMES, '```json\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n```'),
        (HERMES, "```python\nprint(1)\n```"),
        (HERMES, "`x` is a variable"),
        (LLAMA3, "<b>bold</b>"),
        (HERMES, '<tool_call>\n{"name": "add", "arguments": {"a": 1'),
        (LLAMA3, '<|python_tag|>{"name": "add", "parameters": {"a": 1, "b": 2}}'),
        (LLAMA3, "Paris is sunny."),
        (MISTRAL, 'Sure[TOOL_CALLS][{"name": "add", "arguments": {"a": 1, "b": 2}}]'),
        (GENERIC, '{"response": "Hi there"}'),
    ],
)
@pytest.mark.parametrize("size", [1, 3, 1000])
def test_streamed_deltas_accumulate_to_the_parsed_reply(fmt, text, size):
    """What a client accumulates equals the non-streamed message, however the text is cut."""
    reply = PARSERS[fmt](text, NAMES)
    deltas = _stream_pieces(fmt, text, size)
    content = "".join(d.get("content", "") for d in deltas)
    assert content == (reply.content or "")
    streamed = [c for d in deltas for c in d.get("tool_calls", [])]
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in streamed] == [
        (c.name, c.arguments) for c in reply.tool_calls
    ]
    assert [c["index"] for c in streamed] == list(range(len(streamed)))


def test_code_fences_stream_unless_they_hold_a_call():
    stream = ToolStream(HERMES, lambda t: PARSERS[HERMES](t, NAMES))
    assert stream.feed("```") == []  # may open a fenced call: held
    assert stream.feed("python\nprint(1)") == [{"content": "```python\nprint(1)"}]
    fenced = ToolStream(HERMES, lambda t: PARSERS[HERMES](t, NAMES))
    assert fenced.feed('```json\n{"name": "add"') == []


def test_content_before_a_call_streams_before_the_call_ends():
    stream = ToolStream(HERMES, lambda t: PARSERS[HERMES](t, NAMES))
    assert stream.feed("Let me check the weather") == [{"content": "Let me check the weather"}]
    assert stream.feed(" <tool") == []  # may be the opening tag: held
    assert stream.feed('_call>\n{"name": "add"') == []


# ----------------------------------------------------------- bad tools
ADD = {"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}}


@pytest.mark.parametrize(
    "tools, choice, field",
    [
        ("add", None, "tools"),
        ([{"type": "function", "function": {"parameters": {"type": "object"}}}], None, "tools[0].function.name"),
        ([{"type": "function"}], None, "tools[0].function"),
        (
            [ADD, {"type": "function", "function": {"name": "x", "parameters": {"type": "array"}}}],
            None,
            "tools[1].function.parameters",
        ),
        ([{"type": "retrieval", "function": {"name": "x"}}], None, "tools[0].type"),
        ([ADD, ADD], None, "tools[1].function.name"),
        ([{"type": "function", "function": {"name": "has space"}}], None, "tools[0].function.name"),
        ([ADD], {"type": "function", "function": {"name": "sub"}}, "tool_choice.function.name"),
        ([ADD], "always", "tool_choice"),
        (None, "required", "tool_choice"),
    ],
)
def test_bad_tools_name_the_field(tools, choice, field):
    with pytest.raises(ToolCallError) as e:
        tool_spec(tools, choice)
    assert e.value.field == field
    assert str(e.value).startswith(field)


def test_a_schema_the_grammar_engine_refuses_names_its_tool():
    bad = {
        "type": "function",
        "function": {
            "name": "f",
            "parameters": {"type": "object", "properties": {"x": {"type": "string", "pattern": "(unclosed"}}},
        },
    }
    with pytest.raises(ToolCallError) as e:
        plan_tools("<tool_call>", [ADD, bad], "required")
    assert e.value.field == "tools[1].function.parameters"


def test_parallel_tool_calls_must_be_a_bool():
    with pytest.raises(ToolCallError) as e:
        tool_spec([ADD], "auto", "yes")
    assert e.value.field == "parallel_tool_calls"


# ------------------------------------------------- grammars of every family
# What each family's grammar must accept and refuse, checked token by token
# with SmolLM2's tokenizer (the grammars are text: any vocabulary will do).
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
        },
    },
}
ADD_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}},
    },
}
TEMPLATES = {
    HERMES: "<tool_call>",
    LLAMA3: "<|python_tag|>",
    MISTRAL: "[TOOL_CALLS]",
    GENERIC: "{{ messages }}",
}
GOOD = {
    HERMES: '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>',
    LLAMA3: '{"name": "get_weather", "parameters": {"city": "Paris"}}',
    MISTRAL: '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]',
    GENERIC: '{"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}',
}
BAD_ARGS = {  # a unit outside the enum, or a key the function does not have
    HERMES: '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "kelvin"}}\n</tool_call>',
    LLAMA3: '{"name": "get_weather", "parameters": {"town": "Paris"}}',
    MISTRAL: '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": 3}}]',
    GENERIC: '{"tool_call": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "K"}}}',
}


@pytest.fixture(scope="module")
def tokenizer():
    from support.vocab_vectors import model_tokenizer

    return model_tokenizer("smollm2-135m-instruct")[0]


def _matches(grammar, tokenizer, text):
    return grammar.matcher(tokenizer).matches(tokenizer.encode(text, add_bos=False))


@pytest.mark.parametrize("fmt", [HERMES, LLAMA3, MISTRAL, GENERIC])
def test_required_grammars_take_valid_calls_only(fmt, tokenizer):
    plan = plan_tools(TEMPLATES[fmt], [WEATHER_TOOL, ADD_TOOL], "required")
    assert plan.format == fmt
    assert _matches(plan.grammar, tokenizer, GOOD[fmt])
    assert not _matches(plan.grammar, tokenizer, BAD_ARGS[fmt])
    assert not _matches(plan.grammar, tokenizer, "The weather is fine.")
    forced = plan_tools(TEMPLATES[fmt], [WEATHER_TOOL, ADD_TOOL], {"type": "function", "function": {"name": "add"}})
    assert not _matches(forced.grammar, tokenizer, GOOD[fmt])  # another function than the forced one


@pytest.mark.parametrize("fmt", [HERMES, MISTRAL])
def test_auto_grammars_are_lazy(fmt, tokenizer):
    """Free text, or text then a call that must be valid once its opening is written."""
    plan = plan_tools(TEMPLATES[fmt], [WEATHER_TOOL], "auto")
    assert _matches(plan.grammar, tokenizer, "The weather is fine, no tool needed.")
    assert _matches(plan.grammar, tokenizer, "Let me look.\n" + GOOD[fmt])
    assert not _matches(plan.grammar, tokenizer, "Let me look.\n" + BAD_ARGS[fmt])


def test_parallel_calls_follow_parallel_tool_calls(tokenizer):
    two = GOOD[HERMES] + "\n" + GOOD[HERMES]
    one_only = plan_tools(TEMPLATES[HERMES], [WEATHER_TOOL], "required", False)
    many = plan_tools(TEMPLATES[HERMES], [WEATHER_TOOL], "required", True)
    assert not _matches(one_only.grammar, tokenizer, two)
    assert _matches(many.grammar, tokenizer, two)


def test_generic_templates_get_tool_calls_as_json():
    from lamina.tool_calls import prompt_inputs

    plan = plan_tools(TEMPLATES[GENERIC], [WEATHER_TOOL], "auto")
    history = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    messages, tools = prompt_inputs(plan, history, TEMPLATES[GENERIC])
    assert tools is None
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert '"get_weather"' in messages[0]["content"]
    assert json.loads(messages[2]["content"]) == {
        "tool_call": {"name": "get_weather", "arguments": {"city": "Oslo"}, "id": "call_1"}
    }
    assert json.loads(messages[3]["content"]) == {"tool_response": {"tool_call_id": "call_1", "content": "sunny"}}


def test_the_request_constraint_and_the_tools_grammar():
    from lamina.grammar import Grammar
    from lamina.tool_calls import reply_grammar

    own = Grammar.json_object()
    auto = plan_tools(TEMPLATES[HERMES], [WEATHER_TOOL], "auto")
    required = plan_tools(TEMPLATES[HERMES], [WEATHER_TOOL], "required")
    assert reply_grammar(None, own) is own
    assert reply_grammar(auto, None) is auto.grammar
    assert reply_grammar(auto, own) is own  # "auto": the request's own constraint wins
    with pytest.raises(ToolCallError) as e:
        reply_grammar(required, own)
    assert e.value.field == "tool_choice"


def test_tool_messages_reach_the_template_as_text():
    from lamina.tool_calls.messages import template_messages

    out = template_messages([{"role": "tool", "tool_call_id": "c1", "content": {"temperature": 21}}])
    assert out[0]["content"] == '{"temperature": 21}'
    with pytest.raises(ToolCallError) as e:
        template_messages([{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": 3, "content": "y"}])
    assert e.value.field == "messages[1].tool_call_id"
    with pytest.raises(ToolCallError) as e:
        template_messages([{"role": "tool", "tool_call_id": "c1"}])
    assert e.value.field == "messages[0].content"
