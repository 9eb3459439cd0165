"""On-disk training features: what the engine computed on the quantized model, read by torch.

A directory:

    meta.json                  format, n_embd, exit_layer, fingerprint, dtype, shards
    shard-00000.tokens.npy     int32   [n_tokens]            token ids
    shard-00000.exit.npy       float16 [n_tokens, n_embd]    residual stream after layers [0, N)
    shard-00000.final.npy      float16 [n_tokens, n_embd]    full model's final *normed* hidden state
    shard-00000.index.npy      int64   [n_seq, 3]            (start, length, response_start)

Position p of a sequence predicts token p+1; `response_start` is the first position whose next-token
prediction belongs to the response, and positions [response_start, length) are trained.
Shards are written whole (temp file + rename) and only then listed in meta.json, so a crash loses
at most the sequences still buffered (one shard's worth: minutes of work), and a writer reopened on
the directory appends after them.
This module needs only numpy; torch is imported when a batch is collated.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = "kangaroo-features"
VERSION = 1
DTYPE = "float16"
DEFAULT_SHARD_TOKENS = 1 << 16  # ~150 MB of f16 states per shard at n_embd 576
ARRAYS = ("tokens", "exit", "final", "index")


def _shard_file(directory: Path, shard: str, array: str) -> Path:
    return directory / f"{shard}.{array}.npy"


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _read_meta(directory: Path) -> dict:
    path = directory / "meta.json"
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{path}: not a {FORMAT} v{VERSION} directory")
    return meta


class FeatureShardWriter:
    """Streams sequences into shards of about `shard_tokens` tokens.

    Reopening an existing directory appends (n_embd, exit_layer and fingerprint must match);
    `n_sequences_stored` says how many sequences are already on disk so a caller can skip them."""

    def __init__(self, directory: str | Path, n_embd: int, exit_layer: int, fingerprint: str,
                 shard_tokens: int = DEFAULT_SHARD_TOKENS):
        self.directory = Path(directory)
        self.shard_tokens = shard_tokens
        self.directory.mkdir(parents=True, exist_ok=True)
        if (self.directory / "meta.json").exists():
            self.meta = _read_meta(self.directory)
            want = {"n_embd": n_embd, "exit_layer": exit_layer, "fingerprint": fingerprint}
            for key, value in want.items():
                if self.meta[key] != value:
                    raise ValueError(f"{self.directory}: existing features have {key}={self.meta[key]!r}, "
                                     f"not {value!r}; use another directory")
        else:
            self.meta = {"format": FORMAT, "version": VERSION, "n_embd": n_embd, "exit_layer": exit_layer,
                         "fingerprint": fingerprint, "dtype": DTYPE, "n_sequences": 0, "n_tokens": 0,
                         "shards": []}
            _write_json_atomic(self.directory / "meta.json", self.meta)
        self._buffer: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]] = []
        self._buffered_tokens = 0

    @property
    def n_sequences_stored(self) -> int:
        """Sequences safely on disk (listed in meta.json)."""
        return self.meta["n_sequences"]

    @property
    def n_sequences(self) -> int:
        """Stored plus buffered sequences."""
        return self.meta["n_sequences"] + len(self._buffer)

    def add_sequence(self, token_ids, exit_hidden, final_normed, response_start: int) -> None:
        """token_ids: [n]; exit_hidden, final_normed: [n, n_embd] (numpy or CPU tensors, any float)."""
        tokens = np.asarray(token_ids, dtype=np.int32).reshape(-1)
        n, n_embd = len(tokens), self.meta["n_embd"]
        exit_h = np.asarray(exit_hidden, dtype=np.float16)
        final = np.asarray(final_normed, dtype=np.float16)
        for name, arr in (("exit_hidden", exit_h), ("final_normed", final)):
            if arr.shape != (n, n_embd):
                raise ValueError(f"{name} has shape {arr.shape}, expected {(n, n_embd)}")
        if n == 0 or not 0 <= response_start < n:
            raise ValueError(f"response_start {response_start} outside a sequence of {n} tokens")
        self._buffer.append((tokens, exit_h, final, int(response_start)))
        self._buffered_tokens += n
        if self._buffered_tokens >= self.shard_tokens:
            self.flush()

    def flush(self) -> None:
        """Write the buffered sequences as one new shard and list it in meta.json."""
        if not self._buffer:
            return
        lengths = np.array([len(b[0]) for b in self._buffer], dtype=np.int64)
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        arrays = {
            "tokens": np.concatenate([b[0] for b in self._buffer]),
            "exit": np.concatenate([b[1] for b in self._buffer]),
            "final": np.concatenate([b[2] for b in self._buffer]),
            "index": np.stack([starts, lengths, [b[3] for b in self._buffer]], axis=1).astype(np.int64),
        }
        shard = f"shard-{len(self.meta['shards']):05d}"
        for name, arr in arrays.items():
            path = _shard_file(self.directory, shard, name)
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "wb") as f:
                np.save(f, arr)
            os.replace(tmp, path)
        self.meta["shards"].append({"name": shard, "n_sequences": len(lengths), "n_tokens": int(lengths.sum())})
        self.meta["n_sequences"] += len(lengths)
        self.meta["n_tokens"] += int(lengths.sum())
        _write_json_atomic(self.directory / "meta.json", self.meta)
        self._buffer, self._buffered_tokens = [], 0

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> FeatureShardWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        # On an exception the buffered sequences are dropped, not flushed as a short shard: a
        # resumed run then redoes them and writes the shards an uninterrupted run writes (a
        # shard is cut every `shard_tokens` tokens counted from the previous cut).
        if exc_type is None:
            self.close()


def append_features(directory: str | Path, other: str | Path) -> int:
    """Appends the sequences of feature directory `other` to `directory`, in order, as if one
    features run had written both (their responses in that order): features extracted in parallel,
    by several processes or machines, each over its part of responses.jsonl, become one directory.
    Every file of each shard moves (the teacher's cache beside it too); a shard is listed in
    meta.json only once its files are in place. Returns the number of sequences appended."""
    directory, other = Path(directory), Path(other)
    meta, src = _read_meta(directory), _read_meta(other)
    for key in ("n_embd", "exit_layer", "fingerprint", "dtype"):
        if meta[key] != src[key]:
            raise ValueError(f"{other}: {key}={src[key]!r}, but {directory} has {meta[key]!r}")
    for entry in src["shards"]:
        name = f"shard-{len(meta['shards']):05d}"
        for f in sorted(other.glob(f"{entry['name']}.*.npy")):
            os.replace(f, directory / f"{name}{f.name[len(entry['name']):]}")
        meta["shards"].append({**entry, "name": name})
        meta["n_sequences"] += entry["n_sequences"]
        meta["n_tokens"] += entry["n_tokens"]
        _write_json_atomic(directory / "meta.json", meta)
    (other / "meta.json").unlink()  # its shards now belong to `directory`
    return src["n_sequences"]


@dataclass
class FeatureSequence:
    tokens: np.ndarray        # int32 [n]
    exit_hidden: np.ndarray   # float16 [n, n_embd]
    final_normed: np.ndarray  # float16 [n, n_embd]
    response_start: int


class FeatureShards:
    """Read-only, memory-mapped view of a feature directory; sequences are numbered globally."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.meta = _read_meta(self.directory)
        self.n_embd: int = self.meta["n_embd"]
        self.exit_layer: int = self.meta["exit_layer"]
        self.fingerprint: str = self.meta["fingerprint"]
        self._shards = [{a: np.load(_shard_file(self.directory, s["name"], a), mmap_mode="r") for a in ARRAYS}
                        for s in self.meta["shards"]]
        # sequence i lives in shard _seq_shard[i], row _seq_row[i] of its index
        counts = [len(s["index"]) for s in self._shards]
        self._seq_shard = np.repeat(np.arange(len(counts)), counts)
        self._seq_row = np.concatenate([np.arange(c) for c in counts]) if counts else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self._seq_shard)

    @property
    def shard_names(self) -> list[str]:
        return [s["name"] for s in self.meta["shards"]]

    def shard_array(self, shard: str, array: str) -> np.ndarray:
        """One array ("tokens", "exit", "final", "index") of a whole shard, memory-mapped."""
        return self._shards[self.shard_names.index(shard)][array]

    def location(self, i: int) -> tuple[int, int, int]:
        """(shard number, start within it, length) of sequence i: where its rows are in any
        per-shard array (the teacher's cache too)."""
        start, length, _ = self.index_row(i)
        return int(self._seq_shard[i]), start, length

    def index_row(self, i: int) -> tuple[int, int, int]:
        """(start within its shard, length, response_start) of sequence i."""
        start, length, resp = self._shards[self._seq_shard[i]]["index"][self._seq_row[i]]
        return int(start), int(length), int(resp)

    def sequence(self, i: int, begin: int = 0, end: int | None = None) -> FeatureSequence:
        """Sequence i, or its positions [begin, end), as memory-mapped views."""
        shard = self._shards[self._seq_shard[i]]
        start, length, resp = self.index_row(i)
        end = length if end is None else min(end, length)
        rows = slice(start + begin, start + end)
        return FeatureSequence(shard["tokens"][rows], shard["exit"][rows], shard["final"][rows], resp)

    def split(self, heldout_frac: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Deterministic train / held-out split by sequence. Each sequence's side depends only on its
        number and the seed, so appending shards never moves an existing sequence across."""
        ids = np.arange(len(self), dtype=np.uint64)
        u = _splitmix64(_splitmix64(np.full(1, seed, np.uint64)) ^ ids) / np.float64(2.0 ** 64)
        held = u < heldout_frac
        return np.nonzero(~held)[0], np.nonzero(held)[0]


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


class SequenceDataset:
    """Map-style dataset (DataLoader-compatible) of training windows.

    A sequence longer than `max_len` is cut into consecutive windows of `max_len` positions;
    windows with no trained position are dropped. Positions stay absolute, as in the engine.
    The trained positions are the response's, or with `prompt_positions` every position: the
    prompt's text teacher-forced too (the paper's recipe trains on fixed text). Without `with_final`
    the windows leave out the final states (a fit against the teacher's cached top-K never reads
    them: half the bytes a window reads from disk)."""

    def __init__(self, shards: FeatureShards, seq_ids, max_len: int, prompt_positions: bool = False,
                 with_final: bool = True):
        self.shards, self.max_len, self.prompt_positions = shards, max_len, prompt_positions
        self.with_final = with_final
        self.windows: list[tuple[int, int]] = []  # (sequence, first position)
        for i in seq_ids:
            _, length, resp = shards.index_row(int(i))
            for begin in range(0, length, max_len):
                if prompt_positions or begin + max_len > resp:
                    self.windows.append((int(i), begin))

    def __len__(self) -> int:
        return len(self.windows)

    def trained_mask(self, i: int, begin: int) -> np.ndarray:
        """Which positions of sequence i's window at `begin` are trained: bool [window length]."""
        _, length, resp = self.shards.index_row(i)
        positions = np.arange(begin, min(begin + self.max_len, length))
        return positions >= (0 if self.prompt_positions else resp)

    def __getitem__(self, k: int) -> dict:
        i, begin = self.windows[k]
        seq = self.shards.sequence(i, begin, begin + self.max_len)
        n = len(seq.tokens)
        item = {"tokens": np.array(seq.tokens), "exit": np.array(seq.exit_hidden),
                "positions": np.arange(begin, begin + n, dtype=np.int64), "loss_mask": self.trained_mask(i, begin)}
        if self.with_final:
            item["final"] = np.array(seq.final_normed)
        return item


def collate_sequences(items: list[dict]) -> dict:
    """Right-pads a list of windows into a batch of torch tensors:
    tokens [B, T] int64, exit/final [B, T, n_embd] float16 (final where the windows hold it),
    positions [B, T] int64, loss_mask [B, T] bool (False on padding), valid [B, T] bool."""
    import torch  # lazy: writing features must not need torch

    B, T = len(items), max(len(it["tokens"]) for it in items)
    n_embd = items[0]["exit"].shape[1]
    states = ("exit", "final") if "final" in items[0] else ("exit",)
    batch = {"tokens": torch.zeros(B, T, dtype=torch.int64),
             **{key: torch.zeros(B, T, n_embd, dtype=torch.float16) for key in states},
             "positions": torch.zeros(B, T, dtype=torch.int64),
             "loss_mask": torch.zeros(B, T, dtype=torch.bool),
             "valid": torch.zeros(B, T, dtype=torch.bool)}
    for b, it in enumerate(items):
        n = len(it["tokens"])
        for key in ("tokens", *states, "positions", "loss_mask"):
            batch[key][b, :n] = torch.from_numpy(np.asarray(it[key]))
        batch["valid"][b, :n] = True
    return batch


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m kangaroo_edge.train.feature_shards",
                                 description="Append one feature directory's sequences to another (moves its shards).")
    ap.add_argument("directory", help="feature directory to extend")
    ap.add_argument("other", help="feature directory whose sequences follow (emptied)")
    a = ap.parse_args(argv)
    n = append_features(a.directory, a.other)
    print(f"{a.directory}: {n} sequences appended from {a.other}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
