"""A data job's expensive outputs, compressed, so that a fresh machine continues it instead of
starting over: the generating stages' resume logs (`prompts.raw.jsonl`: every prompt-writing
attempt; `responses.jsonl`: every answer, as token ids and text) and `run.json`. Everything else
(prompts.jsonl, features, the fit) is rebuilt from them by the stages themselves, cheaply or at
prefill speed.

    python -m kangaroo_edge.train.archive save runs/smollm2-data train-data/smollm2-135m
    python -m kangaroo_edge.train.archive restore train-data/smollm2-135m runs/smollm2-data

`save` writes only complete lines (a job may be appending while it runs); `restore` refuses to
overwrite a log that holds more than the archive (a workdir ahead of it).
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
from pathlib import Path

from .jsonl import read_jsonl

LOGS = ("prompts.raw.jsonl", "responses.jsonl")
PLAIN = ("run.json",)


def save(workdir: Path, archive: Path) -> dict[str, int]:
    """Lines saved per log."""
    archive.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name in LOGS:
        src = workdir / name
        if not src.exists():
            continue
        lines = src.read_bytes().split(b"\n")
        complete = b"".join(line + b"\n" for line in lines[:-1] if line.strip())  # the last one may be cut short
        tmp = archive / f"{name}.gz.tmp"
        tmp.write_bytes(gzip.compress(complete, compresslevel=9, mtime=0))  # mtime 0: same lines, same bytes
        tmp.replace(archive / f"{name}.gz")
        counts[name] = complete.count(b"\n")
    for name in PLAIN:
        if (workdir / name).exists():
            shutil.copyfile(workdir / name, archive / name)
    return counts


def restore(archive: Path, workdir: Path) -> dict[str, int]:
    """Lines restored per log."""
    workdir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name in LOGS:
        src = archive / f"{name}.gz"
        if not src.exists():
            continue
        data = gzip.decompress(src.read_bytes())
        n = data.count(b"\n")
        have = len(read_jsonl(workdir / name))
        if have > n:
            raise ValueError(f"{workdir / name} holds {have} lines, the archive {n}: the workdir is ahead of it")
        (workdir / name).write_bytes(data)
        counts[name] = n
    for name in PLAIN:
        if (archive / name).exists() and not (workdir / name).exists():
            shutil.copyfile(archive / name, workdir / name)
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("save", help="compress a workdir's resume logs into an archive directory")
    s.add_argument("workdir", type=Path)
    s.add_argument("archive", type=Path)
    r = sub.add_parser("restore", help="unpack an archive into a workdir")
    r.add_argument("archive", type=Path)
    r.add_argument("workdir", type=Path)
    args = p.parse_args(argv)
    try:
        counts = save(args.workdir, args.archive) if args.command == "save" else restore(args.archive, args.workdir)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, n in counts.items():
        print(f"{name}: {n} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
