"""The teacher's side of the loss, computed once: the full model's top-K next-token probabilities at
every position of a feature directory, kept beside its shards.

The full model's distribution at a position is softmax(final_normed @ head^T) over the whole
vocabulary: with a 49k-152k-token head that matmul and softmax are most of a training step, and
they never change. So the fit reads the K most likely tokens and their probabilities from disk
instead (the rest of the mass pooled into the draft head's "other" bucket, see pooled_targets):

    shard-00000.teacher32.ids.npy     int32   [n_tokens, K]   token ids, most likely first
    shard-00000.teacher32.probs.npy   float16 [n_tokens, K]   their probabilities

One pair per feature shard (shards never change once written), so features that grow cost only
their new shards; a file is written whole (temp file + rename). K = 32 holds ~all of a small
model's mass at most positions (the study in docs/training.md measured K against the full loss).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .feature_shards import FeatureShards, SequenceDataset, collate_sequences

TOP_K = 32
CHUNK = 2048  # positions per softmax: 2048 x 152k f32 logits = 1.2 GB at most


def _files(shards: FeatureShards, shard: str, k: int) -> tuple[Path, Path]:
    d = shards.directory
    return d / f"{shard}.teacher{k}.ids.npy", d / f"{shard}.teacher{k}.probs.npy"


def compute_missing(shards: FeatureShards, head: torch.Tensor, k: int = TOP_K, rank: int = 0, world: int = 1,
                    log=None) -> None:
    """Writes the cache files of the shards that lack them; of those, this process takes shard
    i when i % world == rank (the processes of a DDP fit share the work, then wait for each other)."""
    k = min(k, head.shape[0])  # a vocabulary smaller than K: all of it
    for i, name in enumerate(shards.shard_names):
        ids_path, probs_path = _files(shards, name, k)
        if i % world == rank and not (ids_path.exists() and probs_path.exists()):
            if log:
                log(f"teacher: top-{k} of {name}")
            _compute(shards, name, head, k, ids_path, probs_path)


def _compute(shards: FeatureShards, shard: str, head: torch.Tensor, k: int, ids_path: Path, probs_path: Path) -> None:
    final = shards.shard_array(shard, "final")
    ids = np.empty((len(final), k), np.int32)
    probs = np.empty((len(final), k), np.float16)
    with torch.no_grad():
        for s in range(0, len(final), CHUNK):
            f = torch.from_numpy(np.asarray(final[s:s + CHUNK], dtype=np.float32)).to(head.device)
            top = torch.topk(F.softmax(f @ head.T, dim=-1), k, dim=-1)
            ids[s:s + CHUNK] = top.indices.int().cpu().numpy()
            probs[s:s + CHUNK] = top.values.cpu().numpy()
    for path, array in ((ids_path, ids), (probs_path, probs)):
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npy")  # two fits on one directory may race
        np.save(tmp, array)
        os.replace(tmp, path)


class TeacherTopK:
    """The top-K cache of one feature directory; computes the shards it lacks when opened."""

    def __init__(self, shards: FeatureShards, head: torch.Tensor, k: int = TOP_K, log=None):
        self.shards, self.k = shards, min(k, head.shape[0])
        compute_missing(shards, head, self.k, log=log)
        self._arrays = [tuple(np.load(path, mmap_mode="r") for path in _files(shards, name, self.k))
                        for name in shards.shard_names]

    def window(self, i: int, begin: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids [n, K], probs [n, K]) of sequence i's positions [begin, end)."""
        shard, start, length = self.shards.location(i)
        ids, probs = self._arrays[shard]
        rows = slice(start + begin, start + min(end, length))
        return ids[rows], probs[rows]

    def greedy_counts(self, dataset: SequenceDataset) -> Counter:
        """How often each token is the teacher's most likely one at the answer positions of the
        dataset's sequences: what drafts must predict (end of turn included: an answer's last
        position predicts it). Prompt positions never count, trained or not: drafts follow answers."""
        counts: Counter = Counter()
        for i in sorted({i for i, _ in dataset.windows}):
            _, length, resp = self.shards.index_row(i)
            ids, _ = self.window(i, resp, length)
            counts.update(np.asarray(ids[:, 0]).tolist())
        return counts


class TeacherWindows(torch.utils.data.Dataset):
    """A SequenceDataset's windows with the teacher's top-K at each position (t_ids, t_probs)."""

    def __init__(self, base: SequenceDataset, teacher: TeacherTopK):
        self.base, self.teacher = base, teacher

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, k: int) -> dict:
        item = self.base[k]
        i, begin = self.base.windows[k]
        ids, probs = self.teacher.window(i, begin, begin + len(item["tokens"]))
        item["t_ids"], item["t_probs"] = np.asarray(ids, np.int64), np.asarray(probs, np.float32)
        return item


def collate_with_teacher(items: list[dict]) -> dict:
    """collate_sequences, plus t_ids [B, T, K] int64 and t_probs [B, T, K] float32 (zeros on padding)."""
    batch = collate_sequences(items)
    B, T = batch["tokens"].shape
    k = items[0]["t_ids"].shape[1]
    batch["t_ids"] = torch.zeros(B, T, k, dtype=torch.int64)
    batch["t_probs"] = torch.zeros(B, T, k)
    for b, it in enumerate(items):
        n = len(it["tokens"])
        batch["t_ids"][b, :n] = torch.from_numpy(it["t_ids"])
        batch["t_probs"][b, :n] = torch.from_numpy(it["t_probs"])
    return batch


def pooled_targets(t_ids: torch.Tensor, t_probs: torch.Tensor, row_of: torch.Tensor, n_rows: int) -> torch.Tensor:
    """The teacher's distribution on a draft head's rows: t_ids, t_probs [P, K] -> [P, n_rows + 1],
    each cached token's mass on its row, the rest (tokens outside the head, and the mass beyond
    the top K) in the last column, "other". row_of: token id -> row, n_rows for tokens outside."""
    p = torch.zeros(t_ids.shape[0], n_rows + 1, device=t_probs.device)
    p.scatter_add_(1, row_of[t_ids], t_probs)
    p[:, -1] += (1 - t_probs.sum(-1)).clamp_min(0)
    return p


def main(argv: list[str] | None = None) -> int:
    import argparse

    from gguf import GGUFReader

    from .base_model import load_lm_head, model_fingerprint

    ap = argparse.ArgumentParser(prog="python -m kangaroo_edge.train.teacher",
                                 description="Compute the teacher's top-K cache of a feature directory's shards "
                                             "that lack it (what a fit would do first), e.g. one process per half "
                                             "of the features before feature_shards joins them.")
    ap.add_argument("features", help="feature directory")
    ap.add_argument("-m", "--model", required=True, help="the GGUF model the features were made with")
    ap.add_argument("-t", "--threads", type=int, default=1, help="torch threads (default 1)")
    a = ap.parse_args(argv)
    if not Path(a.model).is_file():
        ap.error(f"no model file {a.model}")
    try:
        shards = FeatureShards(a.features)
    except (OSError, ValueError) as e:
        ap.error(f"{a.features}: not a feature directory ({e})")
    if shards.fingerprint != model_fingerprint(a.model):
        ap.error(f"{a.features}: features were made with model {shards.fingerprint}, "
                 f"but {a.model} is {model_fingerprint(a.model)}")
    torch.set_num_threads(a.threads)
    reader = GGUFReader(a.model)
    compute_missing(shards, load_lm_head(a.model, reader), log=lambda msg: print(msg, flush=True))
    print(f"{a.features}: the teacher's top-{TOP_K} cache is complete ({len(shards.shard_names)} shards)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
