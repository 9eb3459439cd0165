"""llama-server's own endpoints beside its OpenAI ones, in its JSON shapes: POST /tokenize,
/detokenize, /apply-template, GET /props, and the prompt of POST /infill (POST /completion and
/infill are generations: app.py and shapes.py).

They read the tokenizer and the chat template, which a generation on the model's thread does not
change, so they are answered at once instead of queueing behind generations (as llama-server's).
"""

from __future__ import annotations

from typing import Any, Optional, Union

import jinja2

from ..llm import KangarooLM
from .errors import invalid_value, unsupported
from .validation import GenerationDefaults, InfillRequest, TokenizeRequest

# fill-in-the-middle tokens by their text, as llama.cpp's vocabulary finds them when a GGUF does
# not name them: Qwen2.5-Coder's, then StarCoder's
FIM_TOKENS = (("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"), ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"))


def tokenize(lm: KangarooLM, r: TokenizeRequest) -> dict:
    """{"tokens": [ids]}, or with_pieces {"tokens": [{"id", "piece"}]}: a piece that is not UTF-8
    on its own (part of a character) is its list of bytes, as llama-server sends it."""
    try:
        ids = lm.tokenize(r.content, add_special=r.add_special, parse_special=r.parse_special)
    except ValueError as e:
        raise invalid_value("content", str(e)) from None
    if not r.with_pieces:
        return {"tokens": ids}
    return {"tokens": [{"id": t, "piece": _piece(lm.engine.token_to_piece(t, True))} for t in ids]}


def _piece(raw: bytes) -> Union[str, list[int]]:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return list(raw)


def infill_ids(lm: KangarooLM, r: InfillRequest) -> list[int]:
    """llama-server's /infill prompt: [prefix token] prefix [suffix token] suffix [middle token]
    prompt, the code tokenized as text; 400 naming the tokens for a model that has none."""
    fim = next((ids for ids in (_special_ids(lm, names) for names in FIM_TOKENS) if ids), None)
    if fim is None:
        raise unsupported("input_prefix", "this model has no fill-in-the-middle tokens (it lacks "
                                          + " / ".join(" ".join(names) for names in FIM_TOKENS)
                                          + "): /infill needs a code model such as Qwen2.5-Coder")
    pre, suf, mid = fim
    try:
        return (lm.tokenize("", add_special=True) + [pre] + _text_ids(lm, r.prefix) + [suf] + _text_ids(lm, r.suffix)
                + [mid] + _text_ids(lm, r.prompt))
    except ValueError as e:  # not valid Unicode
        raise invalid_value("input_prefix", str(e)) from None


def _special_ids(lm: KangarooLM, names: tuple[str, ...]) -> Optional[list[int]]:
    """The ids of the special tokens written `names`, or None when one is not a single special token."""
    ids = [lm.tokenize(name, add_special=False) for name in names]
    if all(len(i) == 1 and i != _text_ids(lm, name) for i, name in zip(ids, names)):
        return [i[0] for i in ids]
    return None


def _text_ids(lm: KangarooLM, text: str) -> list[int]:
    return lm.tokenize(text, add_special=False, parse_special=False)


def detokenize(lm: KangarooLM, tokens: list[int]) -> dict:
    try:
        return {"content": lm.detokenize(tokens, special=True)}
    except ValueError as e:  # not a token id
        raise invalid_value("tokens", str(e)) from None


def apply_template(lm: KangarooLM, messages: list[dict[str, str]]) -> dict:
    try:
        return {"prompt": lm.apply_chat_template(messages)}
    except (ValueError, jinja2.TemplateError) as e:
        raise invalid_value("messages", f"the model's chat template cannot render these messages: {e}") from None


def props(lm: KangarooLM, model_id: str, defaults: GenerationDefaults, chat_template: Optional[str],
          total_slots: int) -> dict:
    """The server's settings as llama-server's GET /props reports them; total_slots: --parallel."""
    s = defaults.sampling
    params: dict[str, Any] = {
        "n_predict": -1 if defaults.max_tokens is None else defaults.max_tokens, "temperature": s.temperature,
        "top_k": s.top_k, "top_p": s.top_p, "min_p": s.min_p, "seed": -1 if s.seed is None else s.seed,
        "repeat_penalty": s.repeat_penalty, "repeat_last_n": s.repeat_last_n,
        "presence_penalty": s.presence_penalty, "frequency_penalty": s.frequency_penalty,
        "stop": [], "speculative": defaults.speculative, "tau": "auto" if defaults.tau is None else defaults.tau,
        "gamma": defaults.gamma, "lookup": defaults.lookup}
    return {"default_generation_settings": {"id": 0, "n_ctx": lm.n_ctx, "params": params},
            "total_slots": total_slots, "model_alias": model_id, "model_path": str(lm.model_path),
            "chat_template": chat_template or lm.engine.chat_template,
            "modalities": {"vision": False, "audio": False}}
