"""A sample of one or more feature directories for a study that need not read all of them:
every N-th finished shard, linked (not copied) into a new directory, renumbered in order as
`feature_shards` appends would number them. The teacher's cache is computed per shard, so a study
on the sample (benchmarks/drafter_study.py) pays for the sampled shards only, and directories
still being written can be sampled: only the shards their meta.json lists are finished.

    python benchmarks/feature_sample.py runs/sample --every 8 runs/exp/features runs/exp-b/features
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kangaroo_edge.train.feature_shards import _read_meta, _write_json_atomic


def sample_features(out: Path, every: int, sources: list[Path]) -> dict:
    """Links every `every`-th shard of `sources` (in order) into `out`; returns its meta."""
    if every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    out.mkdir(parents=True, exist_ok=False)
    meta = None
    for source in sources:
        src = _read_meta(source)
        if meta is None:
            meta = {**src, "shards": [], "n_sequences": 0, "n_tokens": 0}
        for key in ("n_embd", "exit_layer", "fingerprint", "dtype"):
            if meta[key] != src[key]:
                raise ValueError(f"{source}: {key}={src[key]!r}, but {sources[0]} has {meta[key]!r}")
        for entry in src["shards"][::every]:
            name = f"shard-{len(meta['shards']):05d}"
            for f in sorted(source.glob(f"{entry['name']}.*.npy")):
                (out / f"{name}{f.name[len(entry['name']):]}").symlink_to(f.resolve())
            meta["shards"].append({**entry, "name": name})
            meta["n_sequences"] += entry["n_sequences"]
            meta["n_tokens"] += entry["n_tokens"]
    _write_json_atomic(out / "meta.json", meta)
    return meta


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="the sample's directory (new)")
    ap.add_argument("sources", type=Path, nargs="+", help="feature directories, in order")
    ap.add_argument("--every", type=int, required=True, help="take shards 0, N, 2N, ... of each source")
    a = ap.parse_args()
    meta = sample_features(a.out, a.every, a.sources)
    print(json.dumps({"shards": len(meta["shards"]), "sequences": meta["n_sequences"], "tokens": meta["n_tokens"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
