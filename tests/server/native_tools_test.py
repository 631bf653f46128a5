"""Tools through a chat template that renders them itself (tests/server/
tools_template.jinja, Qwen 2.5 / Hermes style), via the official `openai` and
`anthropic` SDKs: the tools reach the prompt, a required call comes back in the
template's `<tool_call>` syntax, parsed into `tool_calls` / `tool_use` with
arguments that validate, and the result goes back through the template.

  native_tools_test.py URL MODEL
"""

import json
import sys

import anthropic
import jsonschema
import openai

URL, MODEL = sys.argv[1:3]
oa = openai.OpenAI(base_url=URL + "/v1", api_key="none", max_retries=0, timeout=120)
an = anthropic.Anthropic(base_url=URL, api_key="none", max_retries=0, timeout=120)
PARAMS = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                           "days": {"type": "integer", "minimum": 1, "maximum": 7}},
          "required": ["city", "days"], "additionalProperties": False}
TOOL = {"type": "function", "function": {"name": "forecast", "description": "Weather forecast", "parameters": PARAMS}}
msgs = [{"role": "user", "content": "Will it rain in Oslo this week?"}]

plain = oa.chat.completions.create(model=MODEL, messages=msgs, max_tokens=1, temperature=0)
r = oa.chat.completions.create(model=MODEL, messages=msgs, tools=[TOOL], tool_choice="required",
                               max_tokens=120, temperature=0)
# The template listed the tools in the prompt.
assert r.usage.prompt_tokens > plain.usage.prompt_tokens + 60, (r.usage, plain.usage)
ch = r.choices[0]
assert ch.finish_reason == "tool_calls", ch
call = ch.message.tool_calls[0]
assert call.function.name == "forecast"
jsonschema.validate(json.loads(call.function.arguments), PARAMS)
msgs += [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
         {"role": "tool", "tool_call_id": call.id, "content": "rain on Tuesday"}]
r2 = oa.chat.completions.create(model=MODEL, messages=msgs, tools=[TOOL], max_tokens=20, temperature=0)
assert r2.usage.prompt_tokens > r.usage.prompt_tokens, (r2.usage, r.usage)
assert r2.choices[0].message.content or r2.choices[0].message.tool_calls, r2

tool = {"name": "forecast", "description": "Weather forecast", "input_schema": PARAMS}
a = an.messages.create(model=MODEL, max_tokens=120, extra_body={"temperature": 0}, tools=[tool],
                       tool_choice={"type": "tool", "name": "forecast"},
                       messages=[{"role": "user", "content": "Will it rain in Oslo this week?"}])
assert a.stop_reason == "tool_use" and a.content[0].type == "tool_use", a
jsonschema.validate(a.content[0].input, PARAMS)
print("native tools: ok")
