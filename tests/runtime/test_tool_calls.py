"""Tool calls end to end in `Llama.create_chat_completion` on real models:
Qwen2.5-Coder-0.5B (its template renders tools, Hermes `<tool_call>`
format) and SmolLM2-135M (its template ignores tools: the generic JSON
format). Arguments are validated with jsonschema, the rendered prompts
compared with transformers' rendering of the same template (the oracle)."""

from __future__ import annotations

import json

import pytest

from lamina.tool_calls import ToolCallError, plan_tools, prompt_inputs
from support.llama_fixture import llama_fixture
from support.template_oracle import transformers_render

jsonschema = pytest.importorskip("jsonschema")

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
}
ADD = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "The weather in a city", "parameters": WEATHER},
    },
    {"type": "function", "function": {"name": "add", "description": "Add two integers", "parameters": ADD}},
]
SCHEMAS = {"get_weather": WEATHER, "add": ADD}
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]


qwen = llama_fixture("qwen2.5-coder-0.5b", n_ctx=1024)
smol = llama_fixture("smollm2-135m-instruct", n_ctx=1024)


def _calls(out):
    message = out["choices"][0]["message"]
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message.get("tool_calls", [])]


def _check_calls(out, allowed):
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls", choice
    calls = choice["message"]["tool_calls"]
    assert calls
    for c in calls:
        assert c["type"] == "function" and c["id"].startswith("call_")
        assert c["function"]["name"] in allowed
        assert isinstance(c["function"]["arguments"], str)
        jsonschema.validate(json.loads(c["function"]["arguments"]), SCHEMAS[c["function"]["name"]])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_named_function_is_called_with_valid_arguments(qwen, seed):
    out = qwen.create_chat_completion(
        ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "add"}},  # not what the question asks for
        temperature=0.8,
        seed=seed,
        max_tokens=40,
    )
    _check_calls(out, {"add"})
    assert out["choices"][0]["message"]["content"] is None


def test_auto_lets_the_model_call_or_answer(qwen):
    called = qwen.create_chat_completion(ASK, tools=TOOLS, temperature=0.0, max_tokens=60)
    assert _calls(called) and _calls(called)[0][0] == "get_weather"
    _check_calls(called, {"get_weather"})
    chat = qwen.create_chat_completion(
        [{"role": "user", "content": "Say hello in French."}], tools=TOOLS, temperature=0.0, max_tokens=12
    )
    assert chat["choices"][0]["message"]["content"] and not _calls(chat)


def test_tool_choice_none_renders_no_tools(qwen):
    none = qwen.create_chat_completion(ASK, tools=TOOLS, tool_choice="none", max_tokens=1)
    plain = qwen.create_chat_completion(ASK, max_tokens=1)
    assert none["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"]
    assert "tool_calls" not in none["choices"][0]["message"]


def test_round_trip_call_result_answer(qwen):
    first = qwen.create_chat_completion(
        ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}}, seed=1, max_tokens=60
    )
    call = first["choices"][0]["message"]["tool_calls"][0]
    result = json.dumps({"temperature": 21, "sky": "sunny"})
    history = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": result},
    ]
    final = qwen.create_chat_completion(history, tools=TOOLS, temperature=0.0, max_tokens=12)
    choice = final["choices"][0]
    assert choice["message"]["content"] and "tool_calls" not in choice["message"]
    # the prompt of the second turn is what transformers renders for it
    hf_history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": json.loads(call["function"]["arguments"])},
                }
            ],
        },
        {"role": "tool", "content": result},
    ]
    theirs = transformers_render(qwen._session.template, hf_history, TOOLS)  # tool_calls' arguments as objects
    assert "<tool_response>\n" + result in theirs and '"name": "get_weather"' in theirs
    assert final["usage"]["prompt_tokens"] == len(qwen.tokenize(theirs.encode(), add_bos=True, special=True))
    plan = plan_tools(qwen._session.template.source, TOOLS)
    messages, tools = prompt_inputs(plan, history, qwen._session.template.source)
    assert qwen._session.template.render(messages, tools=tools) == theirs


def _accumulate(chunks):
    """The openai client's accumulation of chat deltas (content appended, tool calls by index)."""
    content, calls, finish = "", {}, None
    for c in chunks:
        choice = c["choices"][0]
        delta = choice["delta"]
        content += delta.get("content") or ""
        for d in delta.get("tool_calls", []):
            slot = calls.setdefault(d["index"], {"name": "", "arguments": ""})
            slot["name"] += d["function"].get("name") or ""
            slot["arguments"] += d["function"].get("arguments") or ""
        finish = choice["finish_reason"] or finish
    return content or None, [(c["name"], c["arguments"]) for _, c in sorted(calls.items())], finish


def test_required_calls_one_of_two_tools_streamed_or_not(qwen):
    kwargs = dict(tools=TOOLS, tool_choice="required", temperature=0.8, seed=4, max_tokens=60)
    out = qwen.create_chat_completion(ASK, **kwargs)
    _check_calls(out, {"get_weather", "add"})
    message = out["choices"][0]["message"]
    assert len(message["tool_calls"]) == 1  # parallel_tool_calls defaults to false
    content, calls, finish = _accumulate(qwen.create_chat_completion(ASK, stream=True, **kwargs))
    assert content == message["content"]
    assert calls == [(c["function"]["name"], c["function"]["arguments"]) for c in message["tool_calls"]]
    assert finish == out["choices"][0]["finish_reason"] == "tool_calls"


def test_generic_format_for_a_template_without_tools(smol):
    """SmolLM2's template ignores tools: they are described in a system message
    and the reply is constrained to llama.cpp's generic JSON shape."""
    assert "tools" not in smol._session.template.source
    for seed in (1, 2):
        out = smol.create_chat_completion(
            [{"role": "user", "content": "Add 2 and 3."}],
            tools=TOOLS,
            tool_choice="required",
            temperature=0.8,
            seed=seed,
            max_tokens=80,
        )
        _check_calls(out, {"get_weather", "add"})


def test_generic_round_trip(smol):
    """A tool result goes back to a template without a tool role as the generic format's JSON."""
    first = smol.create_chat_completion(
        [{"role": "user", "content": "Add 2 and 3."}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "add"}},
        seed=1,
        max_tokens=60,
    )
    call = first["choices"][0]["message"]["tool_calls"][0]
    history = [
        {"role": "user", "content": "Add 2 and 3."},
        first["choices"][0]["message"],
        {"role": "tool", "tool_call_id": call["id"], "content": "5"},
    ]
    final = smol.create_chat_completion(history, tools=TOOLS, tool_choice="none", temperature=0.0, max_tokens=8)
    assert final["choices"][0]["message"]["content"]
    plain = [
        {"role": "user", "content": "Add 2 and 3."},
        {"role": "assistant", "content": json.dumps({"tool_call": {"name": "add", **_args(call), "id": call["id"]}})},
        {"role": "user", "content": json.dumps({"tool_response": {"tool_call_id": call["id"], "content": "5"}})},
    ]
    assert final["usage"]["prompt_tokens"] == smol.create_chat_completion(plain, max_tokens=1)["usage"]["prompt_tokens"]


def _args(call):
    return {"arguments": json.loads(call["function"]["arguments"])}


def test_bad_tools_are_typed_errors(qwen):
    with pytest.raises(ToolCallError, match=r"^tool_choice\.function\.name"):
        qwen.create_chat_completion(ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}})
    with pytest.raises(ToolCallError, match=r"^tools\[0\]\.function\.parameters"):
        qwen.create_chat_completion(ASK, tools=[{"type": "function", "function": {"name": "f", "parameters": []}}])
    with pytest.raises(ToolCallError, match=r"^tool_choice"):
        qwen.create_chat_completion(ASK, tools=TOOLS, tool_choice="required", response_format={"type": "json_object"})
    with pytest.raises(ToolCallError, match=r"messages\[1\]\.tool_calls\[0\]\.function\.arguments"):
        qwen.create_chat_completion(
            [*ASK, {"role": "assistant", "tool_calls": [{"function": {"name": "add", "arguments": "{oops"}}]}],
            max_tokens=1,
        )
