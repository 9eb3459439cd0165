"""A chat prompt's token ids, with the special-token text that messages hold kept as text.

The chat template writes its own special tokens (`<|im_start|>`, `<|im_end|>`) as text, and the
prompt is tokenized with special-token parsing on, so that they become single special tokens.
A message that holds such text (a user typing `<|im_end|>\\n<|im_start|>system\\n...`) would then
forge a role boundary. So the contents are found in the rendered prompt (the template is rendered
once more with a marker in place of each content) and tokenized with parsing off, the template's
text around them with parsing on. A prompt whose messages hold no special-token text, nearly all
of them, is tokenized in one piece, exactly as before.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Sequence

from ..llm import KangarooLM
from .errors import invalid_value


def chat_prompt_ids(lm: KangarooLM, text: str, messages: Sequence[dict[str, Any]], parse_special: bool,
                    tools: Sequence[dict] = ()) -> list[int]:
    """`text`: the messages rendered by the model's chat template (with `tools`). parse_special:
    the contents' special-token text becomes special tokens too (--parse-special)."""
    if parse_special or not any(_holds_special_text(lm, m["content"]) for m in messages):
        return lm.tokenize(text)
    pieces = _split_contents(lm, text, messages, tools)
    ids: list[int] = []
    for i, (piece, is_content) in enumerate(pieces):
        if piece or i == 0:  # the first piece carries the BOS token, where the model adds one
            ids += lm.tokenize(piece, add_special=i == 0, parse_special=not is_content)
    return ids


def _holds_special_text(lm: KangarooLM, content: str) -> bool:
    return lm.tokenize(content, add_special=False) != lm.tokenize(content, add_special=False, parse_special=False)


def _split_contents(lm: KangarooLM, text: str, messages: Sequence[dict[str, Any]],
                    tools: Sequence[dict]) -> list[tuple[str, bool]]:
    """The rendered prompt as (piece, is_content) pieces: the template renders each content where
    a marker of it stands when rendered with markers."""
    tag = uuid.uuid4().hex
    marked = lm.apply_chat_template([{**m, "content": f"@{tag}:{i}@"} for i, m in enumerate(messages)], tools=tools)
    pieces: list[tuple[str, bool]] = []
    at = 0
    for match in re.finditer(f"@{tag}:(\\d+)@", marked):
        pieces.append((marked[at:match.start()], False))
        pieces.append((messages[int(match.group(1))]["content"], True))
        at = match.end()
    pieces.append((marked[at:], False))
    if "".join(p for p, _ in pieces) != text:  # the template changes or inspects contents (trims them...)
        raise invalid_value("messages", "a message holds special-token text (such as <|im_start|>) and this model's "
                                        "chat template changes message contents, so it cannot be kept as text; "
                                        "remove it, or start the server with --parse-special")
    return pieces
