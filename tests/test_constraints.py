"""Constrained decoding (kangaroo_edge/constraints.py, native/logits_mask.h): every token comes
from the grammar-masked distribution, plain or speculative. Greedy constrained output with
drafting forced equals constrained plain decoding token for token, and the output always parses
and validates against its schema."""

from __future__ import annotations

import json

import jsonschema
import pytest

from adapters import make_adapter
from conftest import load_questions
from kangaroo_edge import KangarooLM
from kangaroo_edge.constraints import Grammar
from kangaroo_edge.decoding import DraftOptions, decode_steps
from kangaroo_edge.types import SamplingParams
from kangaroo_edge.models import shipped_adapter_path

N_PROMPTS = 20
N_NEW = 160
# Bounded strings and arrays: every answer fits in N_NEW tokens, so a complete, valid object is
# the only way a generation ends.
SCHEMA = {
    "type": "object",
    "properties": {
        "topic": {"type": "string", "maxLength": 40},
        "answer": {"type": "string", "maxLength": 160},
        "keywords": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 4},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "difficulty": {"enum": ["easy", "medium", "hard"]},
    },
    "required": ["topic", "answer", "keywords", "confidence", "difficulty"],
    "additionalProperties": False,
}
# (adapter, tau, gamma) cycled over the prompts: tau=0 forces gamma drafts every cycle; None is the
# speculation controller. "deep" drafts with the model's own last attention block (often right,
# so multi-token acceptances under the mask are exercised); "shipped" is the trained adapter.
SETTINGS = [("deep", 0.0, 4), ("shipped", 0.0, 1), ("deep", 0.0, 6), ("shipped", 0.0, 3), ("deep", None, 4)]


def json_prompt(lm: KangarooLM, question: dict) -> str:
    ask = (question["turns"][0] + "\n\nAnswer as a JSON object with the fields topic, answer, keywords, "
           "confidence (0 to 1) and difficulty (easy, medium or hard).")
    return lm.apply_chat_template([{"role": "user", "content": ask}])


@pytest.fixture(scope="module")
def deep_adapter(tmp_path_factory, smollm):
    return make_adapter(smollm, tmp_path_factory.mktemp("adapter") / "deep.gguf", smollm.engine.n_layer - 1)


def test_constrained_greedy_kangaroo_equals_constrained_plain_and_validates(smollm, deep_adapter):
    shipped = shipped_adapter_path(None)
    before = smollm.adapter_path
    grammar = Grammar.json_schema(SCHEMA)
    multi_token_cycles = 0
    try:
        for i, q in enumerate(load_questions(N_PROMPTS)):
            kind, tau, gamma = SETTINGS[i % len(SETTINGS)]
            smollm.load_adapter(deep_adapter if kind == "deep" else shipped)
            prompt = json_prompt(smollm, q)
            plain = smollm.generate(prompt, N_NEW, grammar=grammar, speculative=False)
            spec = smollm.generate(prompt, N_NEW, grammar=grammar, tau=tau, gamma=gamma, lookup=False)
            assert spec.token_ids == plain.token_ids, (q["question_id"], kind, tau, gamma)
            assert plain.finish_reason == "stop", plain.text
            jsonschema.validate(json.loads(plain.text), SCHEMA)
            if tau == 0.0:
                assert spec.stats.draft_n >= spec.stats.cycles > 0
            multi_token_cycles += sum(spec.stats.accepted_hist[1:])
    finally:
        if before is not None:
            smollm.load_adapter(before)
    assert multi_token_cycles > 0  # drafts inside the grammar were accepted, not only rejected


class OutputOnly:
    """A grammar mask without rollback(): the decoder masks the output with it, not the drafts
    (as before drafts were masked)."""

    def __init__(self, mask):
        self._mask = mask

    def allowed(self, address: int, n_bytes: int) -> None:
        self._mask.allowed(address, n_bytes)

    def accept(self, token: int) -> None:
        self._mask.accept(token)


def forced_drafting(smollm, prompt: str, mask) -> tuple[list[int], list[tuple[int, list[int]]], object]:
    """Greedy, the adapter drafting 4 tokens every cycle: the output, each step's verified drafts
    (the inputs after the pending token) with the length of the output they follow, the record."""
    output, drafts = [], []
    draft = DraftOptions(tau=0.0, gamma=4, lookup=False)
    for i, step in enumerate(decode_steps(smollm.engine, smollm.tokenize(prompt), SamplingParams(), draft, N_NEW, mask)):
        if i > 0:
            drafts.append((len(output), smollm.engine.last_step()[0][1:]))
        output += step
    return output, drafts, smollm.engine.stats()


def test_drafts_obey_the_grammar_and_more_are_accepted(smollm):
    """Under a JSON schema every draft the adapter proposes is one the grammar allows after the
    output before it, and tokens per verification is higher than with the drafts unmasked (the
    output is the same: the constraint is lossless either way)."""
    grammar = Grammar.json_schema(SCHEMA)
    masked, unmasked = [0, 0], [0, 0]  # [cycle tokens, cycles]
    checked = 0
    smollm.load_adapter(shipped_adapter_path(None))  # the default model's own (as the first test restores it)
    for q in load_questions(4):
        prompt = json_prompt(smollm, q)
        output, drafts, stats = forced_drafting(smollm, prompt, smollm.grammar_mask(grammar))
        replay = smollm.grammar_mask(grammar).matcher
        consumed = 0
        for n, verified in drafts:
            assert replay.consume_tokens(output[consumed:n])
            consumed = n
            verified = [t for t in verified if not smollm.engine.is_eog(t)]  # the grammar's end
            assert replay.validate_tokens(verified) == len(verified), (q["question_id"], n, verified)
            checked += len(verified)
        masked = [masked[0] + stats.cycle_tokens, masked[1] + stats.cycles]
        same, _, before = forced_drafting(smollm, prompt, OutputOnly(smollm.grammar_mask(grammar)))
        assert same == output
        unmasked = [unmasked[0] + before.cycle_tokens, unmasked[1] + before.cycles]
    assert checked > 100
    assert masked[0] / masked[1] > unmasked[0] / unmasked[1], (masked, unmasked)


def test_constrained_sampling_with_speculation_validates(smollm):
    grammar = Grammar.json_schema(SCHEMA)
    for seed, q in enumerate(load_questions(4)):
        r = smollm.generate(json_prompt(smollm, q), N_NEW, grammar=grammar, temperature=0.8, top_p=0.95,
                            seed=seed, tau=0.0, gamma=4)
        assert r.finish_reason == "stop", r.text
        jsonschema.validate(json.loads(r.text), SCHEMA)


def test_response_format_json_object_and_gbnf(smollm):
    prompt = smollm.apply_chat_template([{"role": "user", "content": "Describe a cat in JSON."}])
    r = smollm.generate(prompt, 96, response_format={"type": "json_object"}, tau=0.0, gamma=4)
    assert r.finish_reason == "length" or isinstance(json.loads(r.text), dict)
    yes_no = 'root ::= ("yes" | "no") "."'
    r = smollm.generate(smollm.apply_chat_template([{"role": "user", "content": "Is water wet?"}]), 16,
                        grammar=yes_no, tau=0.0, gamma=4)
    assert r.text in ("yes.", "no.") and r.finish_reason == "stop"


def test_bad_grammars_are_refused_with_the_reason(smollm):
    with pytest.raises(ValueError, match="grammar"):
        smollm.generate("x", 4, grammar="root ::= undefined_rule")
    with pytest.raises(ValueError, match="response_format"):
        smollm.generate("x", 4, response_format={"type": "yaml"})


def test_prompt_lookup_drafts_under_a_grammar_equal_constrained_plain(smollm):
    """Asked to repeat a JSON object from the prompt under its schema, the output copies it: prompt
    lookup drafts the copied tokens inside the grammar, they are accepted several at a time, and
    the output is constrained plain decoding's."""
    record = {"name": "Red kangaroo", "habitat": "grasslands and deserts of mainland Australia",
              "height_m": 1.6, "tags": ["marsupial", "herbivore", "nocturnal"]}
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "habitat": {"type": "string"},
                                               "height_m": {"type": "number"},
                                               "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 4}},
              "required": ["name", "habitat", "height_m", "tags"], "additionalProperties": False}
    grammar = Grammar.json_schema(schema)
    prompt = smollm.apply_chat_template([{"role": "user", "content": "Repeat this JSON object exactly:\n\n"
                                          + json.dumps(record)}])
    smollm.load_adapter(shipped_adapter_path(None))
    smollm.reset()
    plain = smollm.generate(prompt, N_NEW, grammar=grammar, speculative=False)
    smollm.reset()
    spec = smollm.generate(prompt, N_NEW, grammar=grammar, tau=0.6, gamma=6, lookup=True)
    assert spec.token_ids == plain.token_ids
    jsonschema.validate(json.loads(plain.text), schema)
    lookup = spec.stats.drafter("lookup")
    assert lookup.cycles > 0 and lookup.draft_n_accepted > lookup.cycles  # copied several tokens per verification
