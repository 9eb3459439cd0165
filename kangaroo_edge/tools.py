"""Tool calling (OpenAI's `tools` / `tool_choice`): the tools rendered into the prompt, the
model's output parsed into `tool_calls`, and a grammar that forces a call when one is required.

The call format is Qwen2.5's (Hermes'): `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`.
A model whose chat template has a tools section (it reads `tools`) gets the tools, the assistant's
earlier `tool_calls` and the `tool` results through its own template. Any other model gets the
generic format below: a system message listing the tools (in <tools></tools>) and the call
format, earlier calls written as that text in the assistant's turn, and tool results as user turns
`<tool_response>\\n...\\n</tool_response>`, the way Qwen's template writes them.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Optional, Sequence, Union

from .constraints import JSON_LAYOUT, Grammar

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
_CALL = re.compile(re.escape(CALL_OPEN) + r"\s*(.*?)\s*" + re.escape(CALL_CLOSE), re.DOTALL)

GENERIC_TOOLS_PROMPT = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""

ToolChoice = Union[str, dict, None]


def tool_names(tools: Sequence[dict]) -> list[str]:
    return [t["function"]["name"] for t in tools]


def template_reads_tools(source: Optional[str]) -> bool:
    """Whether a Jinja chat template has a tools section of its own."""
    return bool(source) and re.search(r"\btools\b", source) is not None


def function_name(tool_choice: ToolChoice) -> Optional[str]:
    """The function a named tool_choice ({"type": "function", "function": {"name": ...}}) forces."""
    if isinstance(tool_choice, dict):
        return (tool_choice.get("function") or {}).get("name")
    return None


def active_tools(tools: Optional[Sequence[dict]], tool_choice: ToolChoice) -> list[dict]:
    """The tools the model is shown: none with tool_choice "none", only the named one when forced."""
    if not tools or tool_choice == "none":
        return []
    name = function_name(tool_choice)
    if name is None:
        return list(tools)
    chosen = [t for t in tools if t["function"]["name"] == name]
    if not chosen:
        raise ValueError(f"tool_choice names the function {name!r}, which is not among the tools")
    return chosen


def call_grammar(tools: Sequence[dict], tool_choice: ToolChoice) -> Optional[Grammar]:
    """With tool_choice "required" or a named function: one call, as valid JSON of one of the tools
    (name and arguments schema); otherwise no constraint."""
    if not tools or not (tool_choice == "required" or function_name(tool_choice)):
        return None
    calls = [{"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
              "properties": {"name": {"const": t["function"]["name"]},
                             "arguments": t["function"].get("parameters") or {"type": "object"}}}
             for t in tools]
    schema = {"anyOf": calls} if len(calls) > 1 else calls[0]
    schema["x-guidance"] = JSON_LAYOUT
    lark = f'start: "{CALL_OPEN}\\n" call "\\n{CALL_CLOSE}"\ncall: %json {json.dumps(schema)}\n'
    return Grammar.lark(lark)


def template_messages(messages: Sequence[dict], tools: Sequence[dict], native: bool) -> list[dict]:
    """The messages as the chat template renders them. native: the template reads `tools`,
    assistant `tool_calls` (arguments as objects) and `tool` messages itself; else they become
    the generic format's text."""
    out = []
    if tools and not native:
        listing = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
        section = GENERIC_TOOLS_PROMPT.format(tools=listing)
        if messages and messages[0]["role"] == "system":
            out.append({"role": "system", "content": messages[0]["content"] + "\n\n" + section})
            messages = messages[1:]
        else:
            out.append({"role": "system", "content": section})
    for m in messages:
        calls = m.get("tool_calls")
        if native:
            if calls:
                m = {**m, "tool_calls": [{**c, "function": {**c["function"], "arguments": _arguments(c)}}
                                         for c in calls]}
            out.append(m)
        elif m["role"] == "tool":
            out.append({"role": "user", "content": f"<tool_response>\n{m['content']}\n</tool_response>"})
        elif calls:
            text = "\n".join(f"{CALL_OPEN}\n" + json.dumps({"name": c["function"]["name"], "arguments": _arguments(c)},
                                                           ensure_ascii=False) + f"\n{CALL_CLOSE}" for c in calls)
            out.append({"role": "assistant", "content": (m.get("content") or "") + ("\n" if m.get("content") else "") + text})
        else:
            out.append(m)
    return out


def _arguments(call: dict) -> Any:
    args = call["function"].get("arguments")
    return json.loads(args) if isinstance(args, str) else (args or {})


def parse_tool_calls(text: str, names: Sequence[str]) -> tuple[Optional[str], list[dict]]:
    """The output's content (the text outside the calls, None when empty) and its calls in
    OpenAI's shape (arguments as a JSON string). A block that is not a JSON call stays text.
    Small models often leave the tags out: an answer that is nothing but a JSON call of one of
    the tools (`names`) is a call too."""
    calls, kept, at = [], [], 0
    for match in _CALL.finditer(text):
        call = _json_call(match.group(1), None)
        if call is None:
            continue
        kept.append(text[at:match.start()])
        at = match.end()
        calls.append(call)
    kept.append(text[at:])
    content = "".join(kept).strip()
    if not calls and text.lstrip().startswith("{"):
        bare = _json_call(text.strip(), names)
        if bare is not None:
            return None, [bare]
    return (content or None), calls


def _json_call(text: str, names: Optional[Sequence[str]]) -> Optional[dict]:
    """{"name": ..., "arguments": {...}} as an OpenAI tool call; None if it is not one (of `names`)."""
    try:
        call = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return None
    if names is not None and (call["name"] not in names or not isinstance(call.get("arguments"), dict)):
        return None
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call.get("arguments", {}), ensure_ascii=False)}}


class ToolCallStream:
    """Streams the content before a tool call and holds back the rest: text from `<tool_call>` on
    (and a tail that could be its beginning), or a whole answer that starts with `{` (it may be a
    bare call), is kept until the end, when the calls are parsed and sent whole in one delta
    (OpenAI streams a call's arguments in pieces; one piece is valid too)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.text = ""
        self._sent = 0

    def add(self, piece: str) -> str:
        """The part of the text that can be streamed now."""
        self.text += piece
        start = self.text.find(CALL_OPEN)
        if self._sent == 0 and not self.text.strip() or self.text.lstrip().startswith("{"):
            start = 0
        safe = start if start >= 0 else len(self.text) - _partial_open(self.text)
        out = self.text[self._sent:max(safe, self._sent)]
        self._sent = max(safe, self._sent)
        return out

    def finish(self) -> tuple[str, list[dict]]:
        """The content not streamed yet, and the calls."""
        _, calls = parse_tool_calls(self.text, self.names)
        end = max(self.text.find(CALL_OPEN), 0) if calls else len(self.text)
        rest = self.text[self._sent:max(end, self._sent)]
        self._sent = len(self.text)
        return (rest.rstrip() if calls else rest), calls


def _partial_open(text: str) -> int:
    """Length of the longest tail of text that is a proper prefix of `<tool_call>`."""
    for n in range(min(len(CALL_OPEN) - 1, len(text)), 0, -1):
        if CALL_OPEN.startswith(text[-n:]):
            return n
    return 0
