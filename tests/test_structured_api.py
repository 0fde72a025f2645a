"""Structured generation through the official ``openai`` client: JSON schemas (``parse`` with pydantic),
``json_object``, tools (auto / required / named, streamed deltas, a full round trip), the ``grammar``
extension and logprobs, on the real Gemma GGUF, on the scripted model, and through the proxy backend
to a second DataPilot server. Every bad input is a 400 in OpenAI's shape naming its ``param``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

import httpx
import jsonschema
import openai
import pytest
from openai import OpenAI
from pydantic import BaseModel

from tests.conftest import CHAT_MODEL, PROXY_KEY, Server, assert_healthy


class City(BaseModel):
    name: str
    country: str
    population_millions: float
    is_capital: bool


class Weather(BaseModel):
    city: str
    unit: Literal["celsius", "fahrenheit"]


WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the local time in a timezone.",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string"}},
            "required": ["timezone"],
        },
    },
}
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER_TOOL, TIME_TOOL)}


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[OpenAI]:
    with OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=180) as c:
        yield c


@pytest.fixture(scope="module")
def proxy(proxy_server: Server) -> Iterator[OpenAI]:
    with OpenAI(base_url=proxy_server.v1, api_key=PROXY_KEY, max_retries=0, timeout=180) as c:
        yield c


def assert_valid_calls(message: Any, names: set[str]) -> None:
    assert message.tool_calls, f"no tool call in {message}"
    for call in message.tool_calls:
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_models_list_what_each_supports(client: OpenAI) -> None:
    models = {m.id: m.model_dump() for m in client.models.list().data}
    gemma = models[CHAT_MODEL]["supports"]
    assert gemma == {"json_schema": True, "tools": True, "grammar": True, "logprobs": True}
    assert models["all-MiniLM-L6-v2"]["supports"] == dict.fromkeys(gemma, False)
    assert models["echo"]["supports"]["json_schema"] and not models["echo"]["supports"]["grammar"]


# -- the real embedded model -------------------------------------------------------------------


@pytest.mark.slow
def test_parse_with_pydantic_model_on_gemma(client: OpenAI) -> None:
    done = client.chat.completions.parse(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Describe Paris as JSON."}],
        response_format=City,
        max_tokens=80,
        temperature=0,
    )
    choice = done.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    assert isinstance(choice.message.parsed, City)
    assert choice.message.parsed.name


@pytest.mark.slow
def test_json_object_and_streamed_schema_on_gemma(client: OpenAI) -> None:
    out = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Give me a JSON object about a cat."}],
        response_format={"type": "json_object"},
        max_tokens=60,
        temperature=0.7,
        seed=3,
    )
    if out.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(out.choices[0].message.content or ""), dict)
    schema = Weather.model_json_schema()
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Weather request for Oslo in celsius, as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "weather", "schema": schema}},
        max_tokens=60,
        temperature=0,
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    jsonschema.validate(json.loads(text), schema)


@pytest.mark.slow
def test_tool_choice_required_and_named_on_gemma(client: OpenAI) -> None:
    ask = [{"role": "user", "content": "What is the weather in Paris right now?"}]
    out = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=ask,
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice="required",
        max_tokens=80,
        temperature=0,
    )
    assert out.choices[0].finish_reason == "tool_calls"
    assert_valid_calls(out.choices[0].message, {"get_weather", "get_time"})
    named = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=ask,
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        parallel_tool_calls=False,
        max_tokens=80,
        temperature=0,
    )
    message = named.choices[0].message
    assert_valid_calls(message, {"get_time"})
    assert len(message.tool_calls or []) == 1


@pytest.mark.slow
def test_tool_choice_auto_on_gemma_answers_or_calls_validly(client: OpenAI) -> None:
    for question in ("What is the weather in Rome?", "What is the capital of France?"):
        out = client.chat.completions.create(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": question}],
            tools=[WEATHER_TOOL],
            max_tokens=60,
            temperature=0,
        )
        choice = out.choices[0]
        if choice.finish_reason == "tool_calls":
            assert_valid_calls(choice.message, {"get_weather"})
        else:
            assert choice.message.content and not choice.message.content.lstrip().startswith("{")


@pytest.mark.slow
def test_streamed_tool_call_deltas_are_reassembled_by_the_client(client: OpenAI) -> None:
    with client.chat.completions.stream(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Weather in Berlin, in fahrenheit?"}],
        tools=[openai.pydantic_function_tool(Weather, name="get_weather")],
        tool_choice="required",
        max_tokens=80,
        temperature=0,
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.delta" in kinds and "tool_calls.function.arguments.done" in kinds
    call = (final.choices[0].message.tool_calls or [])[0]
    assert isinstance(call.function.parsed_arguments, Weather)
    assert final.choices[0].finish_reason == "tool_calls"


@pytest.mark.slow
def test_full_tool_round_trip_on_gemma(client: OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Madrid?"}]
    first = client.chat.completions.create(
        model=CHAT_MODEL, messages=messages, tools=[WEATHER_TOOL], tool_choice="required", max_tokens=80, temperature=0
    )
    call = (first.choices[0].message.tool_calls or [])[0]
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 31, "sky": "sunny"}'})
    final = client.chat.completions.create(
        model=CHAT_MODEL, messages=messages, tools=[WEATHER_TOOL], tool_choice="none", max_tokens=40, temperature=0
    )
    assert final.choices[0].message.content and not final.choices[0].message.tool_calls


@pytest.mark.slow
def test_a_grammar_that_allows_the_sampled_token_changes_nothing(server: Server) -> None:
    """Sampling at a temperature, a grammar or logprobs must not change which tokens are drawn where the
    grammar allows them: the same seed gives the same text with and without (a sampler that reused the
    previous step's sorted token order gave token soup inside every JSON string)."""
    body = {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": "Describe a typical customer of a bike shop."}],
        "max_tokens": 40,
        "temperature": 0.8,
        "seed": 7,
    }
    texts = []
    for extra in ({}, {"grammar": "root ::= [^\\x00]*"}, {"logprobs": True, "top_logprobs": 2}):
        out = httpx.post(f"{server.v1}/chat/completions", json=body | extra, timeout=120).json()
        texts.append(out["choices"][0]["message"]["content"])
    assert len(texts[0]) > 10
    assert texts[1] == texts[0] and texts[2] == texts[0]


@pytest.mark.slow
def test_grammar_and_logprobs_on_gemma(client: OpenAI, server: Server) -> None:
    body = {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": "Is Paris in France? Answer yes or no."}],
        "grammar": 'root ::= ("yes" | "no") "."',
        "max_tokens": 8,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 3,
    }
    out = httpx.post(f"{server.v1}/chat/completions", json=body, timeout=120).json()
    choice = out["choices"][0]
    assert choice["message"]["content"] in ("yes.", "no.")
    content = choice["logprobs"]["content"]
    assert "".join(t["token"] for t in content).strip() == choice["message"]["content"]
    for entry in content:
        assert entry["logprob"] <= 0 and len(entry["top_logprobs"]) == 3
        assert entry["top_logprobs"][0]["logprob"] >= entry["top_logprobs"][-1]["logprob"]
    completion = client.completions.create(
        model=CHAT_MODEL, prompt="The capital of France is", max_tokens=4, temperature=0, logprobs=2
    )
    lp = completion.choices[0].logprobs
    assert lp is not None and lp.tokens and len(lp.tokens) == len(lp.token_logprobs or [])
    assert all(len(t) == 2 for t in lp.top_logprobs or [])


# -- the scripted model and the proxy ------------------------------------------------------------


def test_scripted_round_trip_and_stream_deltas(client: OpenAI) -> None:
    ask: list[Any] = [{"role": "user", "content": "Weather in Lima?"}]
    first = client.chat.completions.create(model="echo", messages=ask, tools=[WEATHER_TOOL], tool_choice="required")
    assert first.choices[0].finish_reason == "tool_calls"
    assert_valid_calls(first.choices[0].message, {"get_weather"})
    call = (first.choices[0].message.tool_calls or [])[0]
    ask += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18 degrees"},
    ]
    final = client.chat.completions.create(model="echo", messages=ask, tools=[WEATHER_TOOL])
    assert final.choices[0].finish_reason == "stop"
    assert "Result of get_weather: 18 degrees" in (final.choices[0].message.content or "")
    chunks = list(
        client.chat.completions.create(
            model="echo", messages=ask[:1], tools=[WEATHER_TOOL], tool_choice="required", stream=True
        )
    )
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas[0].id and deltas[0].function and deltas[0].function.name == "get_weather"
    args = "".join(d.function.arguments or "" for d in deltas if d.function)
    jsonschema.validate(json.loads(args), SCHEMAS["get_weather"])
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.slow
def test_schema_and_tools_through_the_proxy(proxy: OpenAI) -> None:
    parsed = proxy.chat.completions.parse(
        model="up-gemma",
        messages=[{"role": "user", "content": "Weather request for Lisbon as JSON."}],
        response_format=Weather,
        max_tokens=60,
        temperature=0,
    )
    assert isinstance(parsed.choices[0].message.parsed, Weather)
    chunks = list(
        proxy.chat.completions.create(
            model="up-gemma",
            messages=[{"role": "user", "content": "What is the weather in Oslo?"}],
            tools=[WEATHER_TOOL],
            tool_choice="required",
            max_tokens=80,
            temperature=0,
            stream=True,
        )
    )
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas and deltas[0].function and deltas[0].function.name == "get_weather"
    for index in {d.index for d in deltas}:
        args = "".join(d.function.arguments or "" for d in deltas if d.function and d.index == index)
        jsonschema.validate(json.loads(args), SCHEMAS["get_weather"])
    logged = proxy.chat.completions.create(
        model="up-echo", messages=[{"role": "user", "content": "one two"}], logprobs=True, top_logprobs=1
    )
    assert logged.choices[0].logprobs and [t.token for t in logged.choices[0].logprobs.content or []]


# -- bad input --------------------------------------------------------------------------------------


def _bad(server: Server, body: dict[str, Any], param: str, words: str, path: str = "/chat/completions") -> None:
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], **body}
    resp = httpx.post(f"{server.v1}{path}", json=body, timeout=30)
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param, err
    assert words in err["message"], err["message"]


def test_bad_structured_input_is_a_400_naming_the_param(server: Server) -> None:
    schema_fmt = lambda schema: {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}  # noqa: E731
    _bad(server, {"response_format": schema_fmt({"type": "strin"})}, "response_format.json_schema.schema", "strin")
    _bad(
        server,
        {"response_format": schema_fmt({"type": "object", "patternProperties": {"^a": {}}})},
        "response_format.json_schema.schema",
        "patternProperties",
    )
    _bad(server, {"response_format": {"type": "xml"}}, "response_format.type", "xml")
    resp = httpx.post(
        f"{server.v1}/chat/completions",
        json={
            "model": CHAT_MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "grammar": 'root ::= "a"\nx ::= ( "b"',
        },
        timeout=30,
    )
    err = resp.json()["error"]
    assert resp.status_code == 400 and err["param"] == "grammar" and "line 2" in err["message"], err
    _bad(server, {"grammar": "root ::= undefined-rule"}, "grammar", "undefined-rule")
    _bad(
        server,
        {"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        "tool_choice",
        "nope",
    )
    _bad(server, {"tool_choice": "required"}, "tool_choice", "needs tools")
    _bad(
        server,
        {"tools": [{"type": "function", "function": {"name": "bad name!"}}]},
        "tools.0.function.name",
        "bad name!",
    )
    _bad(server, {"grammar": 'root ::= "a"'}, "grammar", "cannot enforce a grammar")
    _bad(server, {"top_logprobs": 2}, "top_logprobs", "logprobs")
    _bad(
        server,
        {"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_x", "content": "1"}]},
        "messages.1.tool_call_id",
        "call_x",
    )
    assert_healthy(server)


def test_tools_on_a_model_that_cannot_call_them(proxy_server: Server) -> None:
    resp = httpx.post(
        f"{proxy_server.v1}/chat/completions",
        headers={"Authorization": f"Bearer {PROXY_KEY}"},
        json={"model": "up-plain", "messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER_TOOL]},
        timeout=30,
    )
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "tools", resp.text
    assert_healthy(proxy_server)


# -- LangChain's OpenAI client against the live server ----------------------------------------------


@pytest.mark.slow
def test_langchain_structured_output_and_bind_tools(server: Server) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        base_url=server.v1, api_key="unused", model=CHAT_MODEL, temperature=0, max_tokens=80, max_retries=0
    )
    try:
        weather = llm.with_structured_output(Weather, method="json_schema").invoke(
            "Weather request for Vienna in celsius."
        )
        assert isinstance(weather, Weather)
        with_tools = llm.bind_tools([WEATHER_TOOL, TIME_TOOL], tool_choice="get_weather")
        reply = with_tools.invoke("What is the weather in Prague?")
        assert reply.tool_calls and reply.tool_calls[0]["name"] == "get_weather"
        jsonschema.validate(reply.tool_calls[0]["args"], SCHEMAS["get_weather"])
    finally:
        llm.root_client.close()
