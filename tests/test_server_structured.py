"""Structured output and tool calling through the real server and the real `openai` client:
response_format (json_object, json_schema, `parse` with a pydantic model), llama.cpp's json_schema,
and a tool call round trip (call, `tool` result, final answer) on Qwen2.5-Coder, whole and
streamed; tool_choice "required" always yields a call that parses."""

from __future__ import annotations

import json
import re

import jsonschema
import pydantic
import pytest

from conftest import REPO
from test_server import Server
from test_server import server as smollm_server  # noqa: F401  (the default model's server, a fixture)

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Get the current local time in a time zone",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}}


class City(pydantic.BaseModel):
    # bounded fields: a 135M model left free writes digits forever ("population": 31111...)
    name: str = pydantic.Field(max_length=40)
    country: str = pydantic.Field(max_length=40)
    is_capital: bool
    founded_year: int = pydantic.Field(ge=-3000, le=2100)


@pytest.fixture(scope="module")
def qwen_server(qwen_path):
    s = Server("-m", str(qwen_path))
    yield s
    s.stop()


def test_parse_with_a_pydantic_model(smollm_server):
    client = smollm_server.client()
    out = client.chat.completions.parse(
        model=smollm_server.model_id, messages=[{"role": "user", "content": "Describe Paris as JSON."}],
        response_format=City, max_tokens=96, temperature=0)
    city = out.choices[0].message.parsed
    assert isinstance(city, City) and city.name, out.choices[0].message.content


def test_json_object_and_json_schema(smollm_server):
    client = smollm_server.client()
    schema = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 80},
                                               "sure": {"type": "boolean"}},
              "required": ["answer", "sure"], "additionalProperties": False}
    for stream in (False, True):
        kwargs = dict(model=smollm_server.model_id, max_tokens=64, temperature=0,
                      messages=[{"role": "user", "content": "What is the capital of France? Answer in JSON."}],
                      response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}})
        if stream:
            text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **kwargs)
                           if c.choices)
        else:
            text = client.chat.completions.create(**kwargs).choices[0].message.content
        jsonschema.validate(json.loads(text), schema)
    out = client.chat.completions.create(model=smollm_server.model_id, max_tokens=48, temperature=0,
                                         messages=[{"role": "user", "content": "List two colors."}],
                                         response_format={"type": "json_object"})
    assert out.choices[0].finish_reason == "length" or isinstance(json.loads(out.choices[0].message.content), dict)
    # llama.cpp's own field
    out = client.chat.completions.create(model=smollm_server.model_id, max_tokens=64, temperature=0,
                                         messages=[{"role": "user", "content": "Is water wet? JSON please."}],
                                         extra_body={"json_schema": schema})
    jsonschema.validate(json.loads(out.choices[0].message.content), schema)


def test_tool_call_round_trip(qwen_server):
    client = qwen_server.client()
    messages = [{"role": "user", "content": "What's the weather like in Paris today?"}]
    for stream in (False, True):
        kwargs = dict(model=qwen_server.model_id, messages=messages, tools=[WEATHER, TIME], max_tokens=64,
                      temperature=0)
        if stream:
            calls, finish = [], None
            for chunk in client.chat.completions.create(stream=True, **kwargs):
                if chunk.choices:
                    calls += chunk.choices[0].delta.tool_calls or []
                    finish = chunk.choices[0].finish_reason or finish
            assert finish == "tool_calls" and len(calls) == 1
            call = calls[0]
        else:
            out = client.chat.completions.create(**kwargs)
            assert out.choices[0].finish_reason == "tool_calls", out.choices[0].message
            call = out.choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather" and json.loads(call.function.arguments)["city"] == "Paris"
        history = messages + [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": call.id, "type": "function",
                 "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
            {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature_c": 21, "sky": "sunny"})}]
        final = client.chat.completions.create(model=qwen_server.model_id, messages=history, tools=[WEATHER, TIME],
                                               max_tokens=64, temperature=0, stream=False)
        message = final.choices[0].message
        assert message.content or message.tool_calls


def test_required_tool_choice_always_yields_a_call(qwen_server):
    client = qwen_server.client()
    asks = ["Hello!", "Tell me a joke.", "What time is it in Tokyo?", "Weather in Oslo?", "Write a poem."]
    for i, ask in enumerate(asks):
        choice = "required" if i % 2 == 0 else {"type": "function", "function": {"name": "get_time"}}
        out = client.chat.completions.create(model=qwen_server.model_id, messages=[{"role": "user", "content": ask}],
                                             tools=[WEATHER, TIME], tool_choice=choice, max_tokens=64,
                                             temperature=0.7, seed=i)
        calls = out.choices[0].message.tool_calls
        assert out.choices[0].finish_reason == "tool_calls" and len(calls) == 1, out.choices[0].message
        tool = {"get_weather": WEATHER, "get_time": TIME}[calls[0].function.name]
        if isinstance(choice, dict):
            assert calls[0].function.name == "get_time"
        jsonschema.validate(json.loads(calls[0].function.arguments), tool["function"]["parameters"])


def readme_snippets() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Structured output and tools"):readme.index("## GPU builds")]
    return re.findall(r"```python\n(.*?)\n```", section, re.DOTALL)


def test_readme_snippets_work_as_written(smollm_server, qwen_server, capsys):
    structured, tools = readme_snippets()
    for snippet, server in ((structured, smollm_server), (tools, qwen_server)):
        exec(compile(snippet.replace("http://127.0.0.1:8080/v1", f"{server.url}/v1"), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "name=" in printed and "get_weather {'city': 'Paris'}" in printed
