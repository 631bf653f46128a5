"""The server through the official SDKs (PyPI `openai`, `anthropic`) and raw
sockets, on 127.0.0.1. Run by tests/server.rs, which starts the servers:

  sdk_test.py MAIN_URL SMALL_URL MODEL KEY EXPECTED_PARIS

MAIN_URL serves MODEL with --parallel 4 and key KEY; SMALL_URL the same model
with --parallel 1 --queue 1 (overflow and disconnects). EXPECTED_PARIS is
`unicorn chat --temperature 0`'s reply to the Paris question.
"""

import http.client
import json
import sys
import threading
import time
import traceback
import urllib.parse

import anthropic
import jsonschema
import openai

MAIN, SMALL, MODEL, KEY, EXPECTED = sys.argv[1:6]
Q = "What is the capital of France?"
oa = openai.OpenAI(base_url=MAIN + "/v1", api_key=KEY, max_retries=0, timeout=120)
an = anthropic.Anthropic(base_url=MAIN, api_key=KEY, max_retries=0, timeout=120)


def raw(url, method, path, body=b"", headers=None, key=KEY, timeout=60):
    """One raw HTTP request; returns (status, headers, body bytes)."""
    u = urllib.parse.urlparse(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    h = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    h.update(headers or {})
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, dict(r.getheaders()), data


def chat(content, **kw):
    kw.setdefault("temperature", 0)
    kw.setdefault("max_tokens", 40)
    return oa.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}], **kw)


def openai_error_shape(data, status):
    e = json.loads(data)["error"]
    assert set(e) == {"message", "type", "param", "code"}, e
    assert e["message"], e


def test_models():
    ids = [m.id for m in oa.models.list().data]
    assert ids == [MODEL], ids
    assert oa.models.retrieve(MODEL).id == MODEL


def test_paris_equals_cli():
    r = chat(Q)
    text = r.choices[0].message.content
    assert text == EXPECTED, (text, EXPECTED)
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.choices[0].finish_reason in ("stop", "length")
    # Content as parts renders the same prompt.
    r2 = oa.chat.completions.create(
        model=MODEL, temperature=0, max_tokens=40,
        messages=[{"role": "user", "content": [{"type": "text", "text": Q}]}])
    assert r2.choices[0].message.content == text


def test_streaming_concatenates_to_whole():
    w = chat(Q).choices[0]
    whole = w.message.content
    parts, usage, reasons = [], None, []
    for ch in chat(Q, stream=True, stream_options={"include_usage": True}):
        if ch.usage:
            usage = ch.usage
        for c in ch.choices:
            if c.delta.content:
                parts.append(c.delta.content)
            if c.finish_reason:
                reasons.append(c.finish_reason)
    assert "".join(parts) == whole, (parts, whole)
    assert len(parts) > 3, parts
    assert reasons == [w.finish_reason], reasons
    assert usage and usage.completion_tokens > 0, usage


def test_completions_and_logprobs():
    r = oa.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=5, temperature=0, logprobs=3)
    assert r.choices[0].text, r
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == r.usage.completion_tokens and all(len(t) <= 3 for t in lp.top_logprobs), lp
    s = "".join(c.choices[0].text for c in oa.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=5, temperature=0, stream=True))
    assert s == r.choices[0].text, (s, r.choices[0].text)
    c = chat(Q, logprobs=True, top_logprobs=2, max_tokens=4)
    entries = c.choices[0].logprobs.content
    assert len(entries) == 4 and all(e.logprob <= 0 and len(e.top_logprobs) == 2 for e in entries), entries
    # Greedy picks the most likely token.
    assert all(e.top_logprobs[0].logprob >= e.logprob - 1e-6 for e in entries)


def test_stop_and_seed():
    r = chat(Q, stop=[" Paris"])
    assert "Paris" not in r.choices[0].message.content
    a = chat("Tell me a story.", temperature=1.0, seed=7, max_tokens=20).choices[0].message.content
    b = chat("Tell me a story.", temperature=1.0, seed=7, max_tokens=20).choices[0].message.content
    assert a == b, (a, b)


SCHEMAS = [
    {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                      "country": {"type": "string", "maxLength": 30}},
     "required": ["city", "country"], "additionalProperties": False},
    {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 20},
        "kind": {"enum": ["capital", "town", "village"]},
        "location": {"type": "object", "properties": {
            "lat": {"type": "integer", "minimum": -90, "maximum": 90},
            "lon": {"type": "integer", "minimum": -180, "maximum": 180}},
                     "required": ["lat", "lon"], "additionalProperties": False},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 1, "maxItems": 3}},
     "required": ["name", "kind", "location", "tags"], "additionalProperties": False},
    {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 100}, "minItems": 2, "maxItems": 4},
]


def test_json_schema_output_validates():
    for i, schema in enumerate(SCHEMAS):
        r = chat("Describe Paris as JSON.", max_tokens=400, response_format={
            "type": "json_schema", "json_schema": {"name": f"s{i}", "schema": schema, "strict": True}})
        assert r.choices[0].finish_reason == "stop", (i, r)
        v = json.loads(r.choices[0].message.content)
        jsonschema.validate(v, schema)
    r = chat("Give me a JSON object with the name and country of the capital of France.",
             max_tokens=300, response_format={"type": "json_object"})
    assert r.choices[0].finish_reason == "stop", r
    assert isinstance(json.loads(r.choices[0].message.content), dict)
    # The regex extension.
    r = chat(Q, max_tokens=20, extra_body={"regex": "[A-Z][a-z]+, [0-9]{4}"})
    t = r.choices[0].message.content
    assert t.split(", ")[0].isalpha() and len(t.split(", ")[1]) == 4, t


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 40},
        "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False}}}


def test_tool_call_required_and_round_trip():
    msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = oa.chat.completions.create(model=MODEL, messages=msgs, tools=[WEATHER], tool_choice="required",
                                   temperature=0, max_tokens=100)
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls", ch
    call = ch.message.tool_calls[0]
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    # Named function, streamed.
    calls = []
    for c in oa.chat.completions.create(model=MODEL, messages=msgs, tools=[WEATHER], stream=True,
                                        tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                        temperature=0, max_tokens=100):
        for x in c.choices:
            calls += x.delta.tool_calls or []
    assert calls and calls[0].function.name == "get_weather", calls
    # The result goes back through the template; the reply is text.
    msgs += [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
             {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21, "sky": "sunny"}'}]
    r2 = oa.chat.completions.create(model=MODEL, messages=msgs, tools=[WEATHER], tool_choice="none",
                                    temperature=0, max_tokens=40)
    assert r2.choices[0].message.content and not r2.choices[0].message.tool_calls, r2


def test_errors():
    bad = openai.OpenAI(base_url=MAIN + "/v1", api_key="wrong", max_retries=0)
    try:
        bad.models.list()
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError as e:
        assert e.status_code == 401
    try:
        chat(Q, n=2)
        raise AssertionError("n=2 was accepted")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and e.body["param"] == "n", e.body
    try:
        oa.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": Q}])
        raise AssertionError("an unknown model was accepted")
    except openai.NotFoundError as e:
        assert e.status_code == 404
    st, _, data = raw(MAIN, "POST", "/v1/chat/completions", b'{"model": 1}')
    assert st == 400, st
    openai_error_shape(data, st)


def test_anthropic():
    r = an.messages.create(model=MODEL, max_tokens=40, extra_body={"temperature": 0}, messages=[{"role": "user", "content": Q}])
    assert r.content[0].type == "text" and r.content[0].text == EXPECTED, r
    assert r.stop_reason in ("end_turn", "max_tokens") and r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    kinds, text = [], []
    with an.messages.stream(model=MODEL, max_tokens=40, extra_body={"temperature": 0},
                            messages=[{"role": "user", "content": Q}]) as s:
        for ev in s:
            kinds.append(ev.type)
            if ev.type == "content_block_delta":
                text.append(ev.delta.text)
    assert "".join(text) == EXPECTED, text
    for k in ["message_start", "content_block_start", "content_block_delta", "content_block_stop",
              "message_delta", "message_stop"]:
        assert k in kinds, (k, kinds)
    r = an.messages.create(model=MODEL, max_tokens=40, extra_body={"temperature": 0}, system="Answer in one word.",
                           stop_sequences=["Paris"], messages=[{"role": "user", "content": Q}])
    assert r.stop_reason in ("stop_sequence", "end_turn", "max_tokens"), r
    tool = {"name": "get_weather", "description": "Current weather in a city",
            "input_schema": WEATHER["function"]["parameters"]}
    msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = an.messages.create(model=MODEL, max_tokens=100, extra_body={"temperature": 0}, tools=[tool],
                           tool_choice={"type": "any"}, messages=msgs)
    use = r.content[0]
    assert r.stop_reason == "tool_use" and use.type == "tool_use", r
    jsonschema.validate(use.input, tool["input_schema"])
    msgs += [{"role": "assistant", "content": [use.model_dump()]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "21 C, sunny"}]}]
    r2 = an.messages.create(model=MODEL, max_tokens=40, extra_body={"temperature": 0}, messages=msgs)
    assert r2.content[0].type == "text" and r2.content[0].text, r2
    bad = anthropic.Anthropic(base_url=MAIN, api_key="wrong", max_retries=0)
    try:
        bad.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": Q}])
        raise AssertionError("a wrong key was accepted")
    except anthropic.AuthenticationError as e:
        assert e.status_code == 401
    st, _, data = raw(MAIN, "POST", "/v1/messages", b'{"model": "x"}', headers={"x-api-key": KEY})
    assert st == 400 and json.loads(data)["type"] == "error", (st, data)


PROMPTS = [f"Write one sentence about the number {i}." for i in range(16)]


def test_sixteen_clients_match_alone():
    alone = [chat(p, max_tokens=24).choices[0].message.content for p in PROMPTS]
    got = [None] * 16
    errors = []

    def one(i):
        try:
            got[i] = chat(PROMPTS[i], max_tokens=24).choices[0].message.content
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    ts = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    for i in range(16):
        assert got[i] == alone[i], (i, got[i], alone[i])


def small_stream(max_tokens):
    """Opens a streamed request on SMALL and returns the open connection."""
    u = urllib.parse.urlparse(SMALL)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    body = json.dumps({"model": MODEL, "stream": True, "max_tokens": max_tokens, "temperature": 0,
                       "messages": [{"role": "user", "content": "Count from 1 to 1000."}]})
    c.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    return c, c.getresponse()


def test_disconnect_frees_slot_and_overflow_is_429():
    small = openai.OpenAI(base_url=SMALL + "/v1", api_key="none", max_retries=0, timeout=60)
    c, r = small_stream(2000)
    assert r.status == 200
    r.readline()  # the first event: generation is under way
    # One slot busy: one request may queue; more are refused with Retry-After.
    c2, r2 = small_stream(2000)
    assert r2.status == 200
    st, h, data = raw(SMALL, "POST", "/v1/chat/completions", json.dumps(
        {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": Q}]}).encode(), key="none")
    h = {k.lower(): v for k, v in h.items()}
    assert st == 429 and h.get("retry-after") == "1", (st, h, data)
    openai_error_shape(data, st)
    # Both clients leave mid-stream: their slot and queue place are freed.
    # The responses hold the sockets too (http.client's makefile): close both.
    for resp, conn in ((r, c), (r2, c2)):
        resp.close()
        conn.close()
    t0 = time.time()
    while True:
        health = json.loads(raw(SMALL, "GET", "/health")[2])["models"][0]
        if health["active"] == 0 and health["queued"] == 0:
            break
        assert time.time() - t0 < 10, health
        time.sleep(0.05)
    r = small.chat.completions.create(model=MODEL, max_tokens=8, temperature=0,
                                      messages=[{"role": "user", "content": Q}])
    assert r.choices[0].message.content, r
    assert time.time() - t0 < 30
    health = json.loads(raw(SMALL, "GET", "/health")[2])
    assert health["models"][0]["active"] == 0 and health["models"][0]["queued"] == 0, health


def test_hostile_requests():
    cases = []
    big = b'{"model": "' + b"x" * (50 << 20) + b'"}'
    cases.append(("50 MB body", raw(MAIN, "POST", "/v1/chat/completions", big), 413))
    nested = b'{"model": ' + b"[" * 100000 + b"]" * 100000 + b"}"
    cases.append(("deep nesting", raw(MAIN, "POST", "/v1/chat/completions", nested), 400))
    cases.append(("invalid UTF-8", raw(MAIN, "POST", "/v1/chat/completions",
                                       b'{"model": "\xff\xfe", "messages": []}'), 400))
    base = {"model": MODEL, "messages": [{"role": "user", "content": Q}], "max_tokens": 20}
    unsat = dict(base, response_format={"type": "json_schema", "json_schema": {
        "name": "u", "schema": {"allOf": [{"type": "string"}, {"type": "integer"}]}}})
    cases.append(("unsatisfiable schema", raw(MAIN, "POST", "/v1/chat/completions", json.dumps(unsat).encode()), 400))
    huge = dict(base, response_format={"type": "json_schema", "json_schema": {
        "name": "h", "schema": {"enum": ["v%06d" % i for i in range(20000)]}}})
    cases.append(("enormous schema", raw(MAIN, "POST", "/v1/chat/completions", json.dumps(huge).encode()), 400))
    cases.append(("max_tokens beyond the context", raw(MAIN, "POST", "/v1/chat/completions",
                                                        json.dumps(dict(base, max_tokens=10**9)).encode()), 413))
    cases.append(("unknown field", raw(MAIN, "POST", "/v1/chat/completions",
                                       json.dumps(dict(base, frobnicate=1)).encode()), 400))
    cases.append(("bad regex", raw(MAIN, "POST", "/v1/chat/completions",
                                   json.dumps(dict(base, regex="(unclosed")).encode()), 400))
    cases.append(("unknown route", raw(MAIN, "GET", "/v1/nothing"), 404))
    cases.append(("wrong method", raw(MAIN, "GET", "/v1/chat/completions"), 405))
    for name, (st, _, data), want in cases:
        assert st == want, (name, st, data[:300])
        openai_error_shape(data, st)
    # Still serving.
    assert chat(Q).choices[0].message.content == EXPECTED


def test_metrics():
    st, h, data = raw(MAIN, "GET", "/metrics")
    text = data.decode()
    assert st == 200 and h["content-type"].startswith("text/plain"), (st, h)
    for m in ["unicorn_requests_total{route=\"/v1/chat/completions\",status=\"200\"}",
              "unicorn_completion_tokens_total", "unicorn_queue_depth", "unicorn_ttft_seconds_bucket",
              "unicorn_decode_tokens_per_second_count"]:
        assert m in text, m
    assert json.loads(raw(MAIN, "GET", "/health", key="")[2])["status"] == "ok"


def main():
    only = sys.argv[6:] 
    tests = [(n, f) for n, f in globals().items() if n.startswith("test_") and (not only or n in only)]
    failed = 0
    for name, f in tests:
        t0 = time.time()
        try:
            f()
            print(f"ok   {name} ({time.time() - t0:.1f} s)", flush=True)
        except Exception:  # noqa: BLE001
            failed += 1
            print(f"FAIL {name}", flush=True)
            traceback.print_exc()
    print(f"{len(tests) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


main()
