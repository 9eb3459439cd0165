"""Values that travel through the public API: sampling options, results, stream chunks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from . import _native

if TYPE_CHECKING:
    from .decoding import DraftOptions

DEFAULT_REPEAT_LAST_N: int = _native.DEFAULT_REPEAT_LAST_N  # llama.cpp's penalty window
MAX_FLOAT32 = 3.4028234663852886e38  # the engine's floats: a larger value becomes inf there


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen. temperature 0 means greedy (argmax).

    Filters apply in llama.cpp's order: top-k, top-p and min-p on the model's distribution,
    then temperature on the tokens that survived. Before them, llama.cpp's repetition penalties
    change the logits of the tokens among the last repeat_last_n tokens of this generation's
    output (not the prompt, as llama-cpp-python): repeat_penalty divides a positive logit and
    multiplies a negative one, frequency_penalty is subtracted once per occurrence and
    presence_penalty once for any. They apply to greedy decoding too.
    """

    temperature: float = 0.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    min_p: float = 0.0  # 0: off
    seed: Optional[int] = None  # None: a random seed per generation
    repeat_penalty: float = 1.0  # 1: off
    frequency_penalty: float = 0.0  # 0: off
    presence_penalty: float = 0.0  # 0: off
    repeat_last_n: int = DEFAULT_REPEAT_LAST_N  # 0: off; -1: the whole output

    def __post_init__(self) -> None:
        # Types here (a bool is not a number, counts are C ints); the ranges are the engine's own
        # (SamplingParams::validate in native/sampling.cpp), checked by building its record.
        for name in ("temperature", "top_p", "min_p", "repeat_penalty", "frequency_penalty", "presence_penalty"):
            if not _real(getattr(self, name)):
                raise ValueError(f"{name} must be a number, got {getattr(self, name)!r}")
        for name in ("top_k", "repeat_last_n"):
            if not _c_int(getattr(self, name)):
                raise ValueError(f"{name} must be an integer, got {getattr(self, name)!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)
                                      or not 0 <= self.seed < 2**64):
            raise ValueError(f"seed must be a non-negative 64-bit integer or None, got {self.seed!r}")
        self.native()

    def native(self) -> "_native.SamplingParams":
        """The engine's record of these options (its constructor checks every range)."""
        return _native.SamplingParams(self.temperature, self.top_k, self.top_p, self.min_p, self.repeat_penalty,
                                      self.frequency_penalty, self.presence_penalty, self.repeat_last_n)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def penalized(self) -> bool:
        """Whether the repetition penalties change anything (llama.cpp skips them otherwise)."""
        return self.repeat_last_n != 0 and (self.repeat_penalty != 1 or self.frequency_penalty != 0
                                            or self.presence_penalty != 0)


def _real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _c_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and -2**31 <= v < 2**31


@dataclass(frozen=True)
class ModelHparams:
    """What a loaded model is (KangarooLM.hparams): the engine's reading of its GGUF."""

    arch: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_vocab: int
    n_ctx_train: int
    rms_eps: float
    rope_freq_base: float
    fingerprint: str  # docs/formats.md, "Model fingerprint"
    bos: int
    eos: int


GenerationStats = _native.GenerationStats  # one generation's figures: native/decoder.h documents each


def stats_dict(record: Any) -> dict[str, Any]:
    """A native record (GenerationStats, DrafterCounts) as JSON: its fields and derived figures
    under their own names (the server's `timings`, `generate --json`, the bench's results)."""
    cls = type(record)
    out: dict[str, Any] = {}
    for name in dir(cls):
        if isinstance(getattr(cls, name), property):
            value = getattr(record, name)
            if isinstance(value, list) and value and not isinstance(value[0], (int, float)):
                value = [stats_dict(v) for v in value]
            out[name] = value
    return out


@dataclass
class GenerationChunk:
    """One step of a streamed generation (text may be empty while a character is incomplete)."""

    text: str
    token_ids: list[int]
    finish_reason: Optional[str] = None  # None until the last chunk: "stop" or "length"
    stats: Optional[GenerationStats] = None  # on the last chunk
    draft: Optional["DraftOptions"] = None  # on the last chunk: how the generation drafted


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (end-of-generation token or stop string) or "length"
    stats: GenerationStats
    draft: "DraftOptions"
    prompt_token_ids: list[int] = field(default_factory=list)
