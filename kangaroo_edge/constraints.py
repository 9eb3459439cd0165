"""Constrained decoding: a grammar (JSON schema, Lark, GBNF, regex) as the native decoder's
LogitsMask (native/logits_mask.h).

The grammar engine is llguidance (docs/benchmarks.md, "Constrained decoding", says why): it
compiles the grammar lazily, computes the allowed-token bitmask for SmolLM2's 49k vocabulary in
~35 us (median; 0.14 ms mean, ~3% of a 4 ms step), writes it straight into the engine's buffer,
reads JSON schemas, Lark, GBNF and regexes, and needs neither torch nor a compile step.
The decoder asks for the mask at every position it samples from (plain steps and every verified
row of a speculative cycle, in order, after the accepted prefix) and reports each output token,
so greedy constrained output equals constrained plain decoding token for token. Drafting asks
ahead: the drafter's tokens are accepted tentatively, each after the mask that allowed it, and
rolled back before verification, so drafts obey the grammar too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional, Union

import llguidance

# The JSON grammar of `response_format: {"type": "json_object"}`: any object.
ANY_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}
# JSON on one line with OpenAI's separators: no free whitespace, so a small model cannot spend its
# tokens on indentation (or on whitespace forever). A schema's own "x-guidance" options win.
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


@dataclass(frozen=True)
class Grammar:
    """A constraint on a generation's output, as llguidance's grammar definition (a JSON string),
    built from one of the forms below."""

    definition: str

    @classmethod
    def json_schema(cls, schema: Union[dict, str, bool]) -> "Grammar":
        text = schema if isinstance(schema, str) else json.dumps(schema)
        try:
            definition = llguidance.LLMatcher.grammar_from_json_schema(text, defaults=JSON_LAYOUT)
        except ValueError as e:
            raise ValueError(f"invalid JSON schema: {e}") from None
        return cls(_checked(definition, "JSON schema"))

    @classmethod
    def gbnf(cls, text: str) -> "Grammar":
        """llama.cpp's GBNF (or Lark: llguidance tells them apart)."""
        return cls(_checked(llguidance.grammar_from("gbnf", text), "grammar"))

    @classmethod
    def lark(cls, text: str) -> "Grammar":
        return cls(_checked(llguidance.grammar_from("lark", text), "Lark grammar"))

    @classmethod
    def regex(cls, pattern: str) -> "Grammar":
        return cls(_checked(llguidance.grammar_from("regex", pattern), "regex"))


def _checked(definition: str, what: str) -> str:
    ok, warnings_or_error = _validate(definition)
    if not ok:
        raise ValueError(f"invalid {what}: {warnings_or_error}")
    return definition


def _validate(definition: str) -> tuple[bool, str]:
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(definition)
    return (not is_error), "; ".join(messages)


def as_grammar(grammar: Union["Grammar", str, None]) -> Optional["Grammar"]:
    """A Grammar, or GBNF / Lark text (llama.cpp's `grammar`), or None."""
    if grammar is None or isinstance(grammar, Grammar):
        return grammar
    if isinstance(grammar, str):
        return Grammar.gbnf(grammar)
    raise TypeError(f"grammar must be a Grammar or GBNF/Lark text, got {type(grammar).__name__}")


def grammar_from_response_format(response_format: Optional[dict]) -> Optional[Grammar]:
    """OpenAI's response_format: {"type": "text"} (none), {"type": "json_object"} (any JSON object)
    or {"type": "json_schema", "json_schema": {"name": ..., "schema": {...}, "strict": ...}}."""
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise ValueError("response_format must be an object")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        # llama.cpp's response_format may carry a schema here too
        return Grammar.json_schema(response_format.get("schema") or ANY_OBJECT_SCHEMA)
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise ValueError("response_format.json_schema must be an object with a 'schema'")
        schema = spec.get("schema", ANY_OBJECT_SCHEMA)
        return Grammar.json_schema(schema)
    raise ValueError(f"response_format.type must be 'text', 'json_object' or 'json_schema', got {kind!r}")


class _EngineTokens:
    """The engine's vocabulary in the shape llguidance's TokenizerWrapper reads (tokens as bytes,
    control tokens marked special, a tokenize callable)."""

    def __init__(self, engine: Any):
        n = engine.n_vocab
        self.tokens: list[bytes] = []
        self.special_token_ids: list[int] = []
        for t in range(n):
            special = engine.token_to_piece(t, True)
            # llama.cpp renders a control token only when asked for special pieces
            if special and not engine.token_to_piece(t, False):
                self.special_token_ids.append(t)
            self.tokens.append(special)
        self.eog_token_ids = [t for t in self.special_token_ids if engine.is_eog(t)] or [engine.eos]
        self.eos_token_id = engine.eos if engine.eos >= 0 else self.eog_token_ids[0]
        self.bos_token_id = engine.bos if engine.bos >= 0 else None
        self._engine = engine

    def __call__(self, text: Union[bytes, str]) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return self._engine.tokenize(text, False, False)


def grammar_tokenizer(engine: Any) -> "llguidance.LLTokenizer":
    """llguidance's view of the engine's vocabulary (~0.1 s for 49k tokens: cache it per model).
    Every end-of-generation token ends a complete grammar."""
    vocab = _EngineTokens(engine)
    return llguidance.LLTokenizer(llguidance.TokenizerWrapper(vocab), n_vocab=engine.n_vocab,
                                  eos_token=vocab.eog_token_ids)


class GrammarMask:
    """One generation's constraint, as the native decoder calls it (LogitsMask): allowed() writes
    the bitmask of tokens the grammar allows next, accept() advances the grammar by the token that
    became output (or was drafted), rollback(n) undoes the last n accepts (the drafts). When the
    grammar is complete, only end-of-generation tokens are allowed."""

    def __init__(self, tokenizer: "llguidance.LLTokenizer", grammar: Grammar):
        self.matcher = llguidance.LLMatcher(tokenizer, grammar.definition, log_level=0)
        self._raise_on_error()

    def allowed(self, address: int, n_bytes: int) -> None:
        self.matcher.unsafe_compute_mask_ptr(address, n_bytes)
        self._raise_on_error()

    def accept(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            self._raise_on_error()

    def rollback(self, n: int) -> None:
        if not self.matcher.rollback(n):
            self._raise_on_error()

    def _raise_on_error(self) -> None:
        if self.matcher.is_error():
            raise ValueError(f"output constraint: {self.matcher.get_error()}")
