"""Stage 3, *features*: what the adapter learns from, computed by our engine on the quantized model.

For every (prompt + response) token sequence of responses.jsonl, teacher-forced, in one pass:

    hidden = forward(ids, 0, N, "hidden")     # [n, n_embd] residual stream after layers [0, N): the adapter's input
    normed = forward(hidden, N, L, "normed")  # [n, n_embd] final normed state: target logits = normed @ head.T

and both go to a FeatureShardWriter directory (f16). Position p predicts token p+1, so the first
trained position (`response_start`) is the *last prompt token*: its next token is the first of the
response. The last response token's position is trained too: its target is the model's
end-of-turn prediction. Sequences longer than n_ctx are cut to n_ctx tokens.

Resumable: sequences are written in the order of responses.jsonl, so the writer's
`n_sequences_stored` says how many to skip.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .feature_shards import DEFAULT_SHARD_TOKENS, FeatureShardWriter
from .responses import read_responses

logger = logging.getLogger(__name__)


@dataclass
class FeaturesReport:
    n_sequences: int      # stored after this run
    n_new: int            # written by this run
    n_tokens: int         # tokens run through the model by this run
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.n_tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def skipped(self) -> bool:
        return self.n_new == 0


def training_sequence(record: dict, n_ctx: int) -> tuple[list[int], int]:
    """(token ids, response_start) of one responses.jsonl record, cut to n_ctx tokens."""
    prompt, response = record["prompt_token_ids"], record["response_token_ids"]
    if not prompt:
        raise ValueError(f"response {record['key']}: empty prompt")
    ids = (prompt + response)[:n_ctx]
    response_start = len(prompt) - 1  # the last prompt position predicts the first response token
    if response_start >= len(ids):
        raise ValueError(f"response {record['key']}: prompt of {len(prompt)} tokens does not fit n_ctx={n_ctx}")
    return ids, response_start


def extract(lm, ids: list[int], exit_layer: int):
    """hidden: [n, n_embd] after layers [0, exit_layer); normed: [n, n_embd] the final normed state.
    Both float32; each call starts a fresh sequence in the engine (it resets its KV cache)."""
    hidden = lm.forward(ids, 0, exit_layer, 0, "hidden", True)
    normed = lm.forward(hidden, exit_layer, lm.hparams.n_layer, 0, "normed", True)
    return hidden, normed


def check_exit_layer(hparams, exit_layer: int) -> None:
    if not isinstance(exit_layer, int) or not 1 <= exit_layer < hparams.n_layer:
        raise ValueError(f"exit layer must be an integer in [1, {hparams.n_layer - 1}] for this "
                         f"{hparams.n_layer}-layer model, got {exit_layer!r}")


def run_features_stage(lm, workdir: str | Path, exit_layer: int, shard_tokens: int = DEFAULT_SHARD_TOKENS,
                       progress: bool = True, teacher=None) -> FeaturesReport:
    """Writes workdir/features/ for every response not yet there: by the engine (`extract`), or by
    `teacher`, a torch_teacher.TorchTeacher of the same model, when given."""
    hp = lm.hparams
    check_exit_layer(hp, exit_layer)
    workdir = Path(workdir)
    records = read_responses(workdir)
    writer = FeatureShardWriter(workdir / "features", hp.n_embd, exit_layer, hp.fingerprint, shard_tokens)
    start = writer.n_sequences_stored
    if start > len(records):
        raise ValueError(f"{workdir / 'features'} holds {start} sequences but responses.jsonl only "
                         f"{len(records)}: they are from another run; delete the features directory")
    todo = records[start:]
    if not todo:
        logger.info("features: done already (%d sequences in %s)", start, writer.directory)
        return FeaturesReport(start, 0, 0, 0.0)

    seqs = [training_sequence(r, lm.n_ctx) for r in todo]
    total = sum(len(ids) for ids, _ in seqs)
    n_tokens, t0 = 0, time.perf_counter()
    bar = tqdm(total=total, unit="tok", unit_scale=True, desc="features", disable=not progress, dynamic_ncols=True)
    with writer:  # flushes the last, partial shard when every sequence is done
        for ids, response_start in seqs:
            hidden, normed = teacher.extract(ids, exit_layer) if teacher else extract(lm, ids, exit_layer)
            writer.add_sequence(ids, hidden, normed, response_start)
            n_tokens += len(ids)
            bar.update(len(ids))
    bar.close()
    report = FeaturesReport(writer.n_sequences_stored, len(seqs), n_tokens, time.perf_counter() - t0)
    logger.info("features: %d sequences, %d tokens in %.1f s = %.0f tok/s (exit layer %d, %d shards)",
                report.n_new, n_tokens, report.seconds, report.tokens_per_s, exit_layer,
                len(writer.meta["shards"]))
    return report
