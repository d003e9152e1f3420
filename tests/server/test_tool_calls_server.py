"""Tool calls through `lamina serve` and the official openai client: the same
request gives the same calls as `Llama` (non-streamed, and streamed as the
client accumulates the deltas), a tool round trip is rendered by the model's
template, and bad tools are 400s naming the field."""

from __future__ import annotations

import json

import httpx
import pytest

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")

from support.llama_fixture import llama_fixture  # noqa: E402
from support.serve_process import client_fixture, server_fixture  # noqa: E402

N_CTX = 1024
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
}
ADD = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "The weather in a city", "parameters": WEATHER},
    },
    {"type": "function", "function": {"name": "add", "description": "Add two integers", "parameters": ADD}},
]
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]
SAMPLING = dict(temperature=0.8, top_p=0.95, seed=5, max_tokens=60)


server = server_fixture("qwen2.5-coder-0.5b", "-np", "1", "-c", str(N_CTX), "-t", "2", "--alias", "qwen")
client = client_fixture(timeout=300)
llm = llama_fixture("qwen2.5-coder-0.5b", n_ctx=N_CTX)


def _pairs(calls):
    return [(c.function.name, c.function.arguments) for c in calls]


def test_required_call_equals_the_library_streamed_or_not(client, llm):
    mine = llm.create_chat_completion(ASK, tools=TOOLS, tool_choice="required", top_k=40, min_p=0.05, **SAMPLING)
    expected = [
        (c["function"]["name"], c["function"]["arguments"]) for c in mine["choices"][0]["message"]["tool_calls"]
    ]
    out = client.chat.completions.create(model="qwen", messages=ASK, tools=TOOLS, tool_choice="required", **SAMPLING)
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert _pairs(choice.message.tool_calls) == expected
    for name, args in expected:
        jsonschema.validate(json.loads(args), {"get_weather": WEATHER, "add": ADD}[name])
    # the openai client's own accumulation of the deltas
    with client.chat.completions.stream(
        model="qwen", messages=ASK, tools=TOOLS, tool_choice="required", **SAMPLING
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.choices[0].message.content is None
    assert _pairs(final.choices[0].message.tool_calls) == expected
    assert all(c.id.startswith("call_") and c.type == "function" for c in final.choices[0].message.tool_calls)


def test_round_trip_with_a_tool_result(client, llm):
    forced = {"type": "function", "function": {"name": "get_weather"}}
    first = client.chat.completions.create(model="qwen", messages=ASK, tools=TOOLS, tool_choice=forced, **SAMPLING)
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    history = [
        *ASK,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21, "sky": "sunny"}'},
    ]
    final = client.chat.completions.create(model="qwen", messages=history, tools=TOOLS, temperature=0.0, max_tokens=12)
    assert final.choices[0].message.content and not final.choices[0].message.tool_calls
    mine = llm.create_chat_completion(history, tools=TOOLS, temperature=0.0, max_tokens=12)
    assert final.usage.prompt_tokens == mine["usage"]["prompt_tokens"]
    assert final.choices[0].message.content == mine["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    "change, param",
    [
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice.function.name"),
        ({"tools": [{"type": "function", "function": {"parameters": {"type": "object"}}}]}, "tools[0].function.name"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
            "tools[0].function.parameters",
        ),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": "required", "response_format": {"type": "json_object"}}, "tool_choice"),
        (
            {
                "messages": [
                    *ASK,
                    {
                        "role": "assistant",
                        "tool_calls": [{"type": "function", "function": {"name": "add", "arguments": "{not json"}}],
                    },
                ]
            },
            "messages[1].tool_calls[0].function.arguments",
        ),
        ({"functions": [{"name": "f"}]}, "functions"),
    ],
)
def test_bad_tools_are_400s_naming_the_field(server, change, param):
    body = {"messages": ASK, "tools": TOOLS, "max_tokens": 4, **change}
    r = httpx.post(f"{server}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
