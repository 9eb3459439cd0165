"""Chat prompts rendered with the GGUF's own `tokenizer.chat_template`, as llama.cpp does, or with
a template the user names: one of llama.cpp's built-in formats ("gemma", "chatml", "llama3"...,
rendered by llama.cpp itself) or a Jinja source. A model without a template (Gemma 3 270M, a
pretrained model) gets no silent guess: the error says how to name one."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .llamacpp import apply_builtin_chat_template, builtin_chat_templates

# The format of both shipped models (kept for callers that want ChatML by its source).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _raise_exception(message: str) -> None:
    raise ValueError(f"chat template: {message}")


class ChatTemplate:
    def __init__(self, source: str, bos_token: str = "", eos_token: str = ""):
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            loader=jinja2.BaseLoader())
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self.source = source or CHATML_TEMPLATE
        self._template = env.from_string(self.source)
        self._bos_token = bos_token
        self._eos_token = eos_token

    def render(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True,
               **kwargs: Any) -> str:
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise ValueError(f"messages[{i}] must be a dict with 'role' and 'content', got {m!r}")
        return self._template.render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                     bos_token=self._bos_token, eos_token=self._eos_token, **kwargs)


class BuiltinChatTemplate:
    """One of llama.cpp's built-in formats, rendered by llama.cpp (llama_chat_apply_template)."""

    def __init__(self, name: str):
        if name not in builtin_chat_templates():
            raise ValueError(f"unknown chat template name {name!r}; llama.cpp's built-ins: "
                             + ", ".join(builtin_chat_templates()))
        self.name = name

    def render(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True,
               **kwargs: Any) -> str:
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise ValueError(f"messages[{i}] must be a dict with 'role' and 'content', got {m!r}")
        return apply_builtin_chat_template(self.name, [(str(m["role"]), str(m["content"])) for m in messages],
                                           add_generation_prompt)


def chat_template_for(model_template: str, override: "str | None", bos_token: str, eos_token: str,
                      model_name: str) -> "ChatTemplate | BuiltinChatTemplate":
    """The template a model's chat prompts use: `override` (a llama.cpp built-in name or a Jinja
    source) when given, else the GGUF's own; ValueError when the model has none."""
    if override:
        if "{%" in override or "{{" in override:
            return ChatTemplate(override, bos_token, eos_token)
        return BuiltinChatTemplate(override)
    if not model_template:
        raise ValueError(
            f"{model_name} has no chat template (its GGUF has no tokenizer.chat_template; a pretrained "
            "model continues raw text: use generate). Name one to chat anyway, e.g. "
            "KangarooLM(..., chat_template='gemma') or --chat-template gemma; llama.cpp's built-ins: "
            + ", ".join(builtin_chat_templates()))
    return ChatTemplate(model_template, bos_token, eos_token)
