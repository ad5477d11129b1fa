#!/usr/bin/env python3
"""Generate the chat-template goldens in tests/data/chat/ (checked by tests/chat_templates.rs).

Every template is rendered the way Hugging Face transformers renders chat templates
(`transformers.utils.chat_template_utils._compile_jinja_template` and `apply_chat_template`):

- `jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)` with the
  `loopcontrols` extension and a `{% generation %}` tag that just renders its body;
- globals `raise_exception(msg)` (raises TemplateError) and `strftime_now(fmt)` (here from a fixed
  date, so the goldens are stable);
- the `tojson` filter replaced by `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
  sort_keys=False)`;
- context `messages`, `tools` (None when absent), `documents` (None), `add_generation_prompt`,
  `bos_token`, `eos_token`, then the case's extra keyword arguments.

Where jinja2 raises (at compile or render time), the error is recorded and our renderer is expected
to fail too.

Usage:
    gen_chat_golden.py --templates DIR [--gguf FILE ...] --out DIR

DIR holds `*.jinja` files (llama.cpp's models/templates); each GGUF contributes its
`tokenizer.chat_template` and any `tokenizer.chat_template.<name>`, with its own BOS/EOS strings.
Needs `jinja2` and `gguf` (pip install jinja2 gguf).
"""

import argparse
import datetime
import glob
import hashlib
import json
import os
import sys

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.sandbox

# 2025-03-14 09:26:53 UTC: the clock strftime_now sees (RenderOptions::now in the Rust test).
NOW_UNIX = 1741944413
NOW = datetime.datetime.fromtimestamp(NOW_UNIX, datetime.timezone.utc).replace(tzinfo=None)

DEFAULT_BOS = "<s>"
DEFAULT_EOS = "</s>"

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name, e.g. Paris"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    }
]

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
USER = {"role": "user", "content": "What is 2+2?"}
ASSISTANT = {"role": "assistant", "content": "2+2 equals 4."}
USER2 = {"role": "user", "content": "And times 3?"}
ASSISTANT2 = {"role": "assistant", "content": "That makes 12."}
TOOL_CALL = {
    "role": "assistant",
    "content": "",
    "tool_calls": [
        {
            "id": "call12345",
            "type": "function",
            "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
        }
    ],
}
TOOL_RESULT = {
    "role": "tool",
    "tool_call_id": "call12345",
    "name": "get_weather",
    "content": '{"temperature": 18, "unit": "celsius"}',
}
WEATHER_USER = {"role": "user", "content": "What is the weather in Paris?"}

CONVERSATIONS = {
    "user_only": [USER],
    "system_user": [SYSTEM, USER],
    "multi_turn": [SYSTEM, USER, ASSISTANT, USER2],
    "multi_turn_closed": [USER, ASSISTANT, USER2, ASSISTANT2],
    "unicode": [
        {"role": "system", "content": "Réponds en français. 日本語も OK. \"quotes\" & <tags> \\ back\\slash"},
        {"role": "user", "content": "  Héllo wörld 🌍\n\tnew line  "},
        {"role": "assistant", "content": "Bonjour 👋 — ça va ? 你好"},
        {"role": "user", "content": "emoji: 🧪🔬 ünïcödé"},
    ],
    "think_history": [
        USER,
        {"role": "assistant", "content": "<think>\nSimple arithmetic.\n</think>\n\n2+2 equals 4."},
        USER2,
    ],
    "reasoning_content": [
        USER,
        {"role": "assistant", "content": "2+2 equals 4.", "reasoning_content": "Simple arithmetic."},
        USER2,
    ],
    "tool_call": [WEATHER_USER, TOOL_CALL, TOOL_RESULT],
    "tool_call_done": [
        WEATHER_USER,
        TOOL_CALL,
        TOOL_RESULT,
        {"role": "assistant", "content": "It is 18 °C in Paris."},
    ],
}

# name -> (conversation, add_generation_prompt, with tools, extra context)
CASES = [
    ("user_only", "user_only", True, False, {}),
    ("system_user", "system_user", True, False, {}),
    ("system_user_no_prompt", "system_user", False, False, {}),
    ("multi_turn", "multi_turn", True, False, {}),
    ("multi_turn_closed", "multi_turn_closed", False, False, {}),
    ("unicode", "unicode", True, False, {}),
    ("think_history", "think_history", True, False, {}),
    ("reasoning_content", "reasoning_content", True, False, {}),
    ("tools_user", "user_only", True, True, {}),
    ("tool_call", "tool_call", True, True, {}),
    ("tool_call_done", "tool_call_done", False, True, {}),
    ("enable_thinking_false", "user_only", True, False, {"enable_thinking": False}),
]


class GenerationTag(jinja2.ext.Extension):
    """transformers' AssistantTracker, minus the tracking: `{% generation %}` renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        call = self.call_method("_render", [])
        return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return NOW.strftime(fmt)


def make_env():
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def error_text(e):
    return f"{type(e).__name__}: {e}"


def render_all(source, bos, eos):
    out = {}
    try:
        tmpl = make_env().from_string(source)
    except Exception as e:  # noqa: BLE001 - any compile failure is a golden
        return {"compile_error": error_text(e)}
    for name, conv, agp, with_tools, extra in CASES:
        ctx = dict(
            messages=json.loads(json.dumps(CONVERSATIONS[conv])),
            tools=json.loads(json.dumps(TOOLS)) if with_tools else None,
            documents=None,
            add_generation_prompt=agp,
            bos_token=bos,
            eos_token=eos,
        )
        ctx.update(extra)
        try:
            out[name] = {"expected": tmpl.render(**ctx)}
        except RecursionError as e:
            out[name] = {"error": error_text(e)}
        except Exception as e:  # noqa: BLE001
            out[name] = {"error": error_text(e)}
    return {"cases": out}


def gguf_templates(path):
    import gguf

    r = gguf.GGUFReader(path)

    def s(key):
        f = r.fields.get(key)
        if f is None:
            return None
        return bytes(f.parts[f.data[0]]).decode("utf-8")

    tokens = r.fields.get("tokenizer.ggml.tokens")

    def tok(key):
        f = r.fields.get(key)
        if f is None or tokens is None:
            return None
        i = int(f.parts[f.data[0]][0])
        return bytes(tokens.parts[tokens.data[i]]).decode("utf-8")

    bos = tok("tokenizer.ggml.bos_token_id") or DEFAULT_BOS
    eos = tok("tokenizer.ggml.eos_token_id") or DEFAULT_EOS
    base = os.path.basename(path)
    if base.endswith(".gguf"):
        base = base[: -len(".gguf")]
    out = []
    for key in r.fields:
        if key == "tokenizer.chat_template" or key.startswith("tokenizer.chat_template."):
            src = s(key)
            suffix = key[len("tokenizer.chat_template") :]
            out.append((f"gguf-{base}{suffix}", f"gguf:{os.path.basename(path)}:{key}", src, bos, eos))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--templates", help="directory of *.jinja templates")
    ap.add_argument("--gguf", action="append", default=[], help="a GGUF file with tokenizer.chat_template")
    ap.add_argument("--out", required=True, help="output directory (tests/data/chat)")
    args = ap.parse_args()

    items = []
    if args.templates:
        for f in sorted(glob.glob(os.path.join(args.templates, "*.jinja"))):
            name = os.path.basename(f)[: -len(".jinja")]
            with open(f, encoding="utf-8") as fh:
                items.append((name, "templates:" + os.path.basename(f), fh.read(), DEFAULT_BOS, DEFAULT_EOS))
    for g in args.gguf:
        items.extend(gguf_templates(g))

    os.makedirs(args.out, exist_ok=True)
    for old in glob.glob(os.path.join(args.out, "*.json")):
        os.remove(old)
    with open(os.path.join(args.out, "conversations.json"), "w", encoding="utf-8") as fh:
        json.dump(
            {
                "generator": f"scripts/gen_chat_golden.py (jinja2 {jinja2.__version__})",
                "now_unix": NOW_UNIX,
                "tools": TOOLS,
                "conversations": CONVERSATIONS,
                "cases": [
                    {"name": n, "conversation": c, "add_generation_prompt": a, "tools": t, "extra": x}
                    for n, c, a, t, x in CASES
                ],
            },
            fh,
            ensure_ascii=False,
            indent=1,
        )
        fh.write("\n")
    summary = []
    for name, origin, src, bos, eos in items:
        res = render_all(src, bos, eos)
        doc = {
            "name": name,
            "origin": origin,
            "sha256": hashlib.sha256(src.encode("utf-8")).hexdigest(),
            "bos_token": bos,
            "eos_token": eos,
            "source": src,
        }
        doc.update(res)
        with open(os.path.join(args.out, f"tmpl-{name}.json"), "w", encoding="utf-8") as fh:
            json.dump(doc, fh, ensure_ascii=False, indent=1)
            fh.write("\n")
        if "compile_error" in res:
            summary.append(f"{name}: compile error: {res['compile_error']}")
        else:
            errs = [k for k, v in res["cases"].items() if "error" in v]
            summary.append(f"{name}: {len(res['cases']) - len(errs)} rendered, {len(errs)} errors {errs}")
    print("\n".join(summary), file=sys.stderr)


if __name__ == "__main__":
    main()
