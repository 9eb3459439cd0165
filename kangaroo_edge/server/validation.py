"""Request bodies of /v1/chat/completions and /v1/completions -> one GenerationRequest, or an
APIError naming the field that is wrong.

What is checked here needs no model: types, ranges, and the parameters this server does not
implement (NOT_IMPLEMENTED: sent with a value other than "off" they are refused rather than
silently ignored, so that a client never believes it got, say, log probabilities).
Structured output (response_format, json_schema, grammar) and tools are parsed here into a
Grammar and the tools the model is shown. Fields
this server does not know are ignored, as llama.cpp's server and OpenAI's own SDKs expect
(clients send `user`, `metadata`...).
The prompt's length against the context is checked where the model is (worker.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from ..constraints import Grammar, grammar_from_response_format
from ..decoding import MAX_GAMMA
from ..tools import active_tools, call_grammar
from ..types import MAX_FLOAT32, SamplingParams
from .errors import invalid_type, invalid_value, model_not_found, unsupported

CHAT, COMPLETION = "chat", "completion"
NATIVE_COMPLETION = "native-completion"  # llama-server's POST /completion: a COMPLETION in its own shapes
ROLES = ("system", "developer", "user", "assistant", "tool")  # developer: OpenAI's newer name for system
TOOL_CHOICES = ("none", "auto", "required")
MAX_STOP_STRINGS = 16
MAX_TEMPERATURE = 2.0  # OpenAI's range
MAX_PENALTY = 2.0  # OpenAI's range of presence_penalty and frequency_penalty: [-2, 2]
SEED_RANDOM = -1  # llama.cpp's "pick a random seed"
MAX_SEED = (1 << 64) - 1
MAX_ENGINE_INT = (1 << 31) - 1  # top_k and repeat_last_n are the engine's ints
N_PREDICT_UNLIMITED = -1  # llama.cpp's n_predict for "until the end of the answer or a full context"
_UNSET = object()  # tau left out or null: the server's default (a request asks for the controller with "auto")


@dataclass(frozen=True)
class GenerationDefaults:
    """What a request gets for the fields it leaves out: the server's flags."""
    sampling: SamplingParams
    max_tokens: Optional[int]  # None: until end of generation or a full context
    speculative: bool = True
    tau: Optional[float] = None  # None: the speculation controller decides
    gamma: Optional[int] = None  # None: the adapter's
    lookup: Optional[bool] = None


@dataclass(frozen=True)
class GenerationRequest:
    endpoint: str  # CHAT, COMPLETION or NATIVE_COMPLETION
    model: str  # the served model's id, echoed in the response
    messages: Optional[list[dict[str, Any]]]  # CHAT: {"role", "content"} strings (+ tool_calls, tool_call_id)
    prompt: Optional[Union[str, list[int]]]  # COMPLETION: text or token ids
    max_tokens: Optional[int]
    sampling: SamplingParams
    stop: list[str]
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk with the usage
    speculative: bool
    tau: Optional[float]
    gamma: Optional[int]
    lookup: Optional[bool]
    cache_prompt: bool  # llama.cpp's extension: reuse the cached prefix (default true)
    # every token constrained to it: response_format, llama.cpp's json_schema or grammar, or a
    # tool call that tool_choice requires
    grammar: Optional[Grammar] = None
    tools: tuple = ()  # CHAT: the function tools the model is shown (none with tool_choice "none")


def parse_request(endpoint: str, body: Any, model_id: str, defaults: GenerationDefaults,
                  strict_model: bool = False) -> GenerationRequest:
    """Any `model` gets the loaded model, as llama-server's; with strict_model only model_id does."""
    body = _body(body)
    f = _Fields(body, options=_ollama_options(body))
    model = f.get("model", _string, model_id)
    if strict_model and model != model_id:
        raise model_not_found(model, model_id)
    if endpoint == CHAT:
        messages, prompt = _messages(body.get("messages")), None
    else:
        messages, prompt = None, _prompt(body.get("prompt"))
    _refuse_not_implemented(body)
    stream = f.get("stream", _bool, False)
    options = f.get("stream_options", _object, None)
    if options is not None and not stream:
        raise invalid_value("stream_options", "stream_options is only allowed when stream is true")
    include_usage = _Fields(options or {}, "stream_options.").get("include_usage", _bool, False)
    tau = f.get("tau", _tau, _UNSET)
    tools, tool_choice = _tools(f) if endpoint == CHAT else ((), None)
    grammar = _grammar(f)
    forced = call_grammar(tools, tool_choice)
    if forced is not None:
        if grammar is not None:
            raise invalid_value("tool_choice", "a required tool call cannot be combined with response_format, "
                                               "json_schema or grammar")
        grammar = forced
    return GenerationRequest(
        endpoint=endpoint, model=model_id, messages=messages, prompt=prompt, max_tokens=_max_tokens(f, defaults.max_tokens),
        sampling=_sampling(f, defaults.sampling), stop=f.get("stop", _stop, []), stream=stream,
        include_usage=include_usage, speculative=f.get("speculative", _bool, defaults.speculative),
        tau=defaults.tau if tau is _UNSET else tau, gamma=f.get("gamma", _int(1, MAX_GAMMA), defaults.gamma),
        lookup=f.get("lookup", _bool, defaults.lookup), cache_prompt=f.get("cache_prompt", _bool, True),
        grammar=grammar, tools=tuple(tools))


# ---- structured output and tools ---------------------------------------------------------

def _grammar(f: "_Fields") -> Optional[Grammar]:
    """OpenAI's response_format, or llama.cpp's json_schema (a schema) or grammar (GBNF or Lark):
    at most one of them."""
    given = [name for name in ("response_format", "json_schema", "grammar") if f.get(name, _present, None)]
    if len(given) > 1:
        raise invalid_value(given[1], f"send one of {' or '.join(given)}, not both")
    try:
        if "response_format" in given:
            return grammar_from_response_format(f.get("response_format", _object, None))
        if "json_schema" in given:
            return Grammar.json_schema(f.get("json_schema", _object, None))
        if "grammar" in given:
            return Grammar.gbnf(f.get("grammar", _string, None))
    except ValueError as e:
        raise invalid_value(given[0], str(e)) from None
    return None


def _present(name: str, v: Any) -> bool:
    """A field that asks for something: not empty ("" and {} are llama.cpp's "none")."""
    return v not in ("", {}) and v != {"type": "text"}


def _tools(f: "_Fields") -> tuple[list[dict], Any]:
    """OpenAI's tools (function tools) and tool_choice -> the tools the model is shown, tool_choice."""
    tools = f.get("tools", _array, [])
    for i, t in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(t.get("function"), dict):
            raise invalid_value(where, f"{where} must be {{\"type\": \"function\", \"function\": {{...}}}}: "
                                       "this server runs function tools only")
        if not isinstance(t["function"].get("name"), str) or not t["function"]["name"]:
            raise invalid_type(f"{where}.function.name", "a string", t["function"].get("name"))
        params = t["function"].get("parameters")
        if params is not None and not isinstance(params, dict):
            raise invalid_type(f"{where}.function.parameters", "a JSON schema object", params)
    choice = f.get("tool_choice", _tool_choice, "auto" if tools else "none")
    if choice != "none" and not tools and choice != "auto":
        raise invalid_value("tool_choice", "tool_choice needs tools")
    try:
        return active_tools(tools, choice), choice
    except ValueError as e:
        raise invalid_value("tool_choice", str(e)) from None


def _tool_choice(name: str, v: Any) -> Any:
    if v in TOOL_CHOICES:
        return v
    if isinstance(v, dict) and v.get("type") == "function" and isinstance((v.get("function") or {}).get("name"), str):
        return v
    raise invalid_value(name, f"{name} must be one of {', '.join(TOOL_CHOICES)} or "
                              "{\"type\": \"function\", \"function\": {\"name\": ...}}")


# ---- llama-server's /tokenize, /detokenize, /apply-template ------------------------------

@dataclass(frozen=True)
class TokenizeRequest:
    content: str
    add_special: bool  # llama-server's default: false
    parse_special: bool  # llama-server's default: true
    with_pieces: bool


def parse_tokenize(body: Any) -> TokenizeRequest:
    f = _Fields(_body(body))
    return TokenizeRequest(content=f.get("content", _string, ""), add_special=f.get("add_special", _bool, False),
                           parse_special=f.get("parse_special", _bool, True),
                           with_pieces=f.get("with_pieces", _bool, False))


def parse_detokenize(body: Any) -> list[int]:
    tokens = _Fields(_body(body)).get("tokens", _array, [])
    for i, t in enumerate(tokens):
        if not _is_int(t):
            raise invalid_type(f"tokens[{i}]", "an integer", t)
    return tokens


@dataclass(frozen=True)
class InfillRequest:
    prefix: str  # input_prefix: the code before the gap
    suffix: str  # input_suffix: the code after it
    prompt: str  # text the middle starts with


def parse_infill(body: Any) -> InfillRequest:
    f = _Fields(_body(body))
    if f.get("input_extra", _array, []):
        raise unsupported("input_extra", "input_extra (other files as context) is not supported by this server")
    return InfillRequest(prefix=f.get("input_prefix", _string, ""), suffix=f.get("input_suffix", _string, ""),
                         prompt=f.get("prompt", _string, ""))


def parse_messages(body: Any) -> list[dict[str, str]]:
    return _messages(_body(body).get("messages"))


def _body(body: Any) -> dict:
    if not isinstance(body, dict):
        raise invalid_type("body", "a JSON object", body)
    return body


def _max_tokens(f: "_Fields", default: Optional[int]) -> Optional[int]:
    """max_completion_tokens, else max_tokens, else llama.cpp's n_predict (-1: until the end of the
    answer or a full context), else the server's -n."""
    n_predict = f.get("n_predict", _int(N_PREDICT_UNLIMITED, None), _UNSET)
    if n_predict == 0:
        raise invalid_value("n_predict", "n_predict must be -1 (until the end) or a positive integer, got 0")
    openai_names = [f.get(name, _int(1, None), None) for name in ("max_completion_tokens", "max_tokens")]
    for value in (*openai_names, n_predict):
        if value is not None and value is not _UNSET:
            return None if value == N_PREDICT_UNLIMITED else value
    return default


def _sampling(f: "_Fields", d: SamplingParams) -> SamplingParams:
    seed = f.get("seed", _int(SEED_RANDOM, MAX_SEED), d.seed)
    sampling = SamplingParams(
        temperature=f.get("temperature", _number(0.0, MAX_TEMPERATURE), d.temperature),
        top_k=f.get("top_k", _int(0, MAX_ENGINE_INT), d.top_k),
        top_p=f.get("top_p", _number(0.0, 1.0, lo_open=True), d.top_p),
        min_p=f.get("min_p", _number(0.0, 1.0), d.min_p),
        seed=None if seed == SEED_RANDOM else seed,
        repeat_penalty=f.get("repeat_penalty", _number(0.0, MAX_FLOAT32, lo_open=True), d.repeat_penalty),
        frequency_penalty=f.get("frequency_penalty", _number(-MAX_PENALTY, MAX_PENALTY), d.frequency_penalty),
        presence_penalty=f.get("presence_penalty", _number(-MAX_PENALTY, MAX_PENALTY), d.presence_penalty),
        repeat_last_n=f.get("repeat_last_n", _int(-1, MAX_ENGINE_INT), d.repeat_last_n))
    # llama.cpp dropped penalize_nl: newlines are penalized as any token (Ollama's
    # penalize_newline true); exempting them is not implemented
    if f.get("penalize_nl", _bool, True) is False and sampling.penalized:
        raise unsupported(f.name_of("penalize_nl"), "penalize_nl=false (newlines exempt from the penalties) is not "
                                                    "supported by this server: newlines are penalized as any token")
    return sampling


# ---- the prompt --------------------------------------------------------------------------

def _messages(value: Any) -> list[dict[str, str]]:
    if value is None:
        raise invalid_value("messages", "messages is required: an array of {role, content} objects",
                            code="missing_required_parameter")
    if not isinstance(value, list):
        raise invalid_type("messages", "an array of {role, content} objects", value)
    if not value:
        raise invalid_value("messages", "messages must hold at least one message")
    out = []
    for i, m in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise invalid_type(where, "an object with role and content", m)
        role = m.get("role")
        if not isinstance(role, str):
            raise invalid_type(f"{where}.role", "a string", role)
        if role not in ROLES:
            raise unsupported(f"{where}.role", f"{where}.role {role!r} is not supported: use one of {', '.join(ROLES)}")
        if m.get("function_call"):
            raise unsupported(f"{where}.function_call", "function_call (the legacy form) is not supported: "
                                                        "send tool_calls")
        calls = m.get("tool_calls")
        content = _content(m.get("content"), f"{where}.content", "assistant" if calls else role)
        message: dict[str, Any] = {"role": "system" if role == "developer" else role, "content": content}
        if calls:
            if role != "assistant":
                raise invalid_value(f"{where}.tool_calls", "only assistant messages carry tool_calls")
            message["tool_calls"] = _tool_calls(calls, f"{where}.tool_calls")
        if role == "tool" and isinstance(m.get("tool_call_id"), str):
            message["tool_call_id"] = m["tool_call_id"]
        out.append(message)
    return out


def _tool_calls(value: Any, where: str) -> list[dict]:
    """An assistant's earlier calls: [{"id", "type": "function", "function": {"name", "arguments"}}],
    arguments a JSON object (OpenAI sends it as a string)."""
    if not isinstance(value, list):
        raise invalid_type(where, "an array of tool calls", value)
    calls = []
    for j, c in enumerate(value):
        fn = c.get("function") if isinstance(c, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise invalid_value(f"{where}[{j}]", f"{where}[{j}] must be {{\"type\": \"function\", \"function\": "
                                                 "{\"name\", \"arguments\"}}")
        args = fn.get("arguments") or "{}"
        try:
            args = json.loads(args) if isinstance(args, str) else args
        except json.JSONDecodeError:
            raise invalid_value(f"{where}[{j}].function.arguments", "arguments must be a JSON object") from None
        calls.append({"id": c.get("id"), "type": "function", "function": {"name": fn["name"], "arguments": args}})
    return calls


def _content(value: Any, where: str, role: str) -> str:
    """A string, or OpenAI's array of content parts, of which this server reads text parts."""
    if isinstance(value, str):
        return value
    if value is None:
        if role == "assistant":  # an assistant turn may carry no text
            return ""
        raise invalid_value(where, f"{where} is required for role {role!r}", code="missing_required_parameter")
    if not isinstance(value, list):
        raise invalid_type(where, "a string or an array of content parts", value)
    texts = []
    for j, part in enumerate(value):
        if not isinstance(part, dict):
            raise invalid_type(f"{where}[{j}]", "a content part object", part)
        if part.get("type") != "text":
            raise unsupported(f"{where}[{j}].type", f"content part type {part.get('type')!r} is not supported: "
                                                    "this model reads text parts only")
        text = part.get("text")
        if not isinstance(text, str):
            raise invalid_type(f"{where}[{j}].text", "a string", text)
        texts.append(text)
    return "\n".join(texts)


def _prompt(value: Any) -> Union[str, list[int]]:
    """A string, token ids, or an array holding one of those (one prompt per request)."""
    if value is None:
        raise invalid_value("prompt", "prompt is required", code="missing_required_parameter")
    if isinstance(value, str):
        return value
    expected = "a string, an array of token ids, or an array holding one prompt"
    if not isinstance(value, list):
        raise invalid_type("prompt", expected, value)
    if not value:
        raise invalid_value("prompt", "prompt must not be an empty array")
    if all(_is_int(t) for t in value):
        return list(value)
    if all(isinstance(p, (str, list)) for p in value):
        if len(value) > 1:
            raise unsupported("prompt", f"prompt holds {len(value)} prompts; this server answers one prompt per "
                                        "request (send them as separate requests)")
        return _prompt(value[0])
    raise invalid_type("prompt", expected, value)


def _stop(name: str, value: Any) -> list[str]:
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list):
        raise invalid_type(name, "a string or an array of strings", value)
    if len(stops) > MAX_STOP_STRINGS:
        raise invalid_value(name, f"{name} holds {len(stops)} strings; at most {MAX_STOP_STRINGS} are allowed")
    for s in stops:
        if not isinstance(s, str):
            raise invalid_type(name, "a string or an array of strings", s)
        if not s:
            raise invalid_value(name, "stop strings must not be empty")
    return list(stops)


# ---- parameters this server does not implement ------------------------------------------

# The one table of request fields that would change the output but are not implemented here
# (OpenAI's, llama.cpp's, Ollama's and vLLM's names): a field is accepted when absent, null or
# set to one of its neutral values (those that mean "off"), and refused with a 400 naming it
# otherwise, so that a client never believes it got, say, a penalty. The fields this
# server implements are read in parse_request; any other field is ignored (`user`, `metadata`...
# do not change the output).
NOT_IMPLEMENTED: dict[str, tuple[Any, ...]] = {
    # OpenAI
    "n": (1,), "best_of": (1,), "logit_bias": ({}, []),
    "logprobs": (False, 0), "top_logprobs": (0,), "echo": (False,), "suffix": ("",),
    "functions": ([],), "function_call": ("none", "auto"),
    "prediction": (), "audio": (), "modalities": (["text"],),
    "reasoning_effort": (), "web_search_options": (),
    # llama.cpp's server
    "ignore_eos": (False,), "typical_p": (1,), "tfs_z": (1,), "mirostat": (0,), "dynatemp_range": (0,),
    "xtc_probability": (0,), "dry_multiplier": (0,), "top_n_sigma": (-1,), "n_probs": (0,),
    "post_sampling_probs": (False,), "samplers": (), "chat_template_kwargs": ({},), "lora": ([],),
    "n_indent": (0,),
    # Ollama, vLLM
    # (vLLM's repetition_penalty counts the prompt too and has no window: not llama.cpp's repeat_penalty)
    "format": ("",), "min_tokens": (0,), "repetition_penalty": (1,), "stop_token_ids": ([],),
    "guided_json": (), "guided_regex": (), "guided_choice": (), "guided_grammar": (),
}


def _refuse_not_implemented(body: dict, prefix: str = "") -> None:
    for name, value in body.items():
        neutral = NOT_IMPLEMENTED.get(name)
        if neutral is None or value is None or any(_same(value, v) for v in neutral):
            continue
        shown = json.dumps(value)[:80]
        raise unsupported(prefix + name, f"{prefix}{name}={shown} is not supported by this server"
                                         + (f" (only {' or '.join(json.dumps(v) for v in neutral)})" if neutral else ""))


# Ollama's `options` object: the options this server implements, by their names at the top level.
# Load-time options (num_ctx, num_thread, num_gpu...) are ignored as unknown fields are; sampling
# options it does not implement (typical_p, mirostat...) are refused as at the top level.
OLLAMA_OPTIONS = {
    "num_predict": "n_predict", "temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p",
    "seed": "seed", "stop": "stop", "repeat_penalty": "repeat_penalty", "repeat_last_n": "repeat_last_n",
    "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
    "penalize_newline": "penalize_nl",
}


def _ollama_options(body: dict) -> dict:
    """options -> {top-level name: (its name in errors, value)} for the options this server reads."""
    options = _Fields(body).get("options", _object, {})
    _refuse_not_implemented(options, "options.")
    return {OLLAMA_OPTIONS[k]: (f"options.{k}", v) for k, v in options.items() if k in OLLAMA_OPTIONS and v is not None}


def _same(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but true is not 1."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


# ---- typed field access ------------------------------------------------------------------

Check = Callable[[str, Any], Any]


class _Fields:
    """Reads fields of a JSON object: null or absent -> the default, else the checked value.
    options (_ollama_options) supply fields the object leaves out; one field given both ways is refused."""

    def __init__(self, body: dict, prefix: str = "", options: Optional[dict] = None):
        self._body, self._prefix, self._options = body, prefix, options or {}

    def get(self, name: str, check: Check, default: Any) -> Any:
        value = self._body.get(name)
        if name in self._options:
            where, option = self._options[name]
            if value is not None:
                raise invalid_value(where, f"{name} is given both in the body and as {where}: send it once")
            return check(where, option)
        return default if value is None else check(self._prefix + name, value)

    def name_of(self, name: str) -> str:
        """The name errors give the field: where the value came from."""
        return self._options[name][0] if name in self._options else self._prefix + name


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _typed(py_type: type, expected: str) -> Check:
    def check(name: str, v: Any) -> Any:
        if not isinstance(v, py_type):
            raise invalid_type(name, expected, v)
        return v
    return check


_bool = _typed(bool, "a boolean")
_string = _typed(str, "a string")
_object = _typed(dict, "an object")
_array = _typed(list, "an array")


def _int(lo: int, hi: Optional[int]) -> Check:
    def check(name: str, v: Any) -> int:
        if not _is_int(v):
            raise invalid_type(name, "an integer", v)
        if v < lo or (hi is not None and v > hi):
            bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise invalid_value(name, f"{name} must be an integer {bound}, got {v}")
        return v
    return check


def _number(lo: float, hi: float, lo_open: bool = False) -> Check:
    def check(name: str, v: Any) -> float:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise invalid_type(name, "a number", v)
        if not math.isfinite(v) or not ((v > lo if lo_open else v >= lo) and v <= hi):
            raise invalid_value(name, f"{name} must be a number in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {v!r}")
        return float(v)
    return check


def _tau(name: str, v: Any) -> Optional[float]:
    """A fixed threshold in [0, 1], or "auto": the speculation controller."""
    if v == "auto":
        return None
    if isinstance(v, str):
        raise invalid_value(name, f"tau must be a number in [0, 1] or \"auto\", got {v!r}")
    return _number(0.0, 1.0)(name, v)


__all__ = ["CHAT", "COMPLETION", "NATIVE_COMPLETION", "GenerationDefaults", "GenerationRequest", "InfillRequest",
           "TokenizeRequest", "parse_detokenize", "parse_infill", "parse_messages", "parse_request", "parse_tokenize"]
