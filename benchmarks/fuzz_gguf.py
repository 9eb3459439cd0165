"""Hostile GGUF files: seeded mutations of a real model and a real adapter, fed to the loaders.

Every case must either load (and then generate a couple of tokens) or raise a Python exception.
A crash (signal, abort), a hang (timeout), a MemoryError or a peak RSS far above a clean load
is a failure. Each case runs in a forked child of this process, which never creates an engine
itself (ggml's worker threads do not survive a fork), so a crash kills only the child.

    python benchmarks/fuzz_gguf.py --cases 2000 --seed 1          # long run
    python benchmarks/fuzz_gguf.py --cases 1 --seed 1 --only 417  # replay one case

Mutations target the GGUF structure (docs/formats.md): header counts, key/string lengths, value
and array types, array counts, numeric values, tensor names, dimension counts, shapes, types
and data offsets, plus truncation of the header or the data and random byte flips.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import signal
import struct
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

# ---- GGUF layout walker ------------------------------------------------------------------
# Records the offset and width of every integer field worth mutating; written from the GGUF
# spec (magic, version, n_tensors, n_kv, key/values, tensor infos, aligned data).

SCALAR_SIZE = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
FLOAT_TYPES = {6: 4, 12: 8}
STRING, ARRAY = 8, 9


@dataclass
class Field:
    kind: str    # category of the field, see walk()
    offset: int
    width: int   # bytes; floats are marked by kind "float"
    dims: tuple = ()  # "retype" fields: the tensor's shape and type, to find same-size types


@dataclass
class Layout:
    fields: list[Field]
    header_end: int  # end of the tensor infos (data starts at the next alignment boundary)


def walk(data: bytes) -> Layout:
    fields: list[Field] = []
    pos = 4

    def u(width: int) -> int:
        nonlocal pos
        v = int.from_bytes(data[pos:pos + width], "little")
        pos += width
        return v

    def string(kind: str) -> None:
        # "<kind>_len" is the u64 length, "<kind>_text" the bytes (width = the string's length)
        nonlocal pos
        fields.append(Field(kind + "_len", pos, 8))
        n = u(8)  # (not `pos += u(8)`: that reads pos before u() advances it)
        if n:
            fields.append(Field(kind + "_text", pos, n))
        pos += n

    def value(vtype: int) -> None:
        nonlocal pos
        if vtype == STRING:
            string("str")
        elif vtype == ARRAY:
            fields.append(Field("arr_type", pos, 4))
            atype = u(4)
            fields.append(Field("arr_count", pos, 8))
            n = u(8)
            if atype == STRING:
                for _ in range(n):
                    string("arr_str")
            elif n:
                fields.append(Field("arr_elem", pos, SCALAR_SIZE[atype] * n, (SCALAR_SIZE[atype],)))
                pos += SCALAR_SIZE[atype] * n
        elif vtype in FLOAT_TYPES:
            fields.append(Field("float", pos, FLOAT_TYPES[vtype]))
            pos += FLOAT_TYPES[vtype]
        else:
            fields.append(Field("scalar", pos, SCALAR_SIZE[vtype]))
            pos += SCALAR_SIZE[vtype]

    fields.append(Field("version", pos, 4))
    u(4)
    fields.append(Field("count", pos, 8))
    n_tensors = u(8)
    fields.append(Field("count", pos, 8))
    n_kv = u(8)
    for _ in range(n_kv):
        string("key")
        fields.append(Field("value_type", pos, 4))
        value(u(4))
    for _ in range(n_tensors):
        string("name")
        fields.append(Field("n_dims", pos, 4))
        n_dims = u(4)
        if n_dims >= 2:
            fields.append(Field("swap_dims", pos, 8 * n_dims))
        dims = []
        for _ in range(n_dims):
            fields.append(Field("dim", pos, 8))
            dims.append(u(8))
        fields.append(Field("tensor_type", pos, 4))
        fields.append(Field("retype", pos, 4, tuple(dims) + (int.from_bytes(data[pos:pos + 4], "little"),)))
        pos += 4
        fields.append(Field("tensor_offset", pos, 8))
        pos += 8
    return Layout(fields, pos)


# ---- mutations ---------------------------------------------------------------------------

# Relative weights: structural damage (lengths, counts, value types) is mostly caught by ggml's
# GGUF parser, so half the weight goes to changes that keep the file parseable and have to be
# caught by our own checks (values, shapes, tensor types, offsets, names, data truncation).
KIND_WEIGHTS = {
    "version": 1, "count": 2, "key_len": 2, "value_type": 2, "str_len": 2, "arr_type": 2, "arr_count": 2,
    "arr_str_len": 1, "name_len": 2, "n_dims": 2, "truncate_header": 3, "flip_bytes": 3,
    "scalar": 8, "float": 5, "dim": 6, "swap_dims": 4, "tensor_type": 4, "retype": 6, "tensor_offset": 6,
    "key_text": 3, "str_text": 4, "arr_str_text": 2, "arr_elem": 3, "name_text": 4, "truncate_data": 4,
}
# the types ggml knows (a valid type on the wrong tensor must be caught by the loader)
GGML_TYPES = [int(t) for t in GGML_QUANT_SIZES]


def same_size_types(dims: tuple, old_type: int) -> list[int]:
    """Types under which a tensor of this shape has exactly as many bytes as now: ggml's parser
    checks that tensor data is contiguous, so only such a retype keeps the file parseable."""
    def nbytes(t: int) -> Optional[int]:
        blck, size = GGML_QUANT_SIZES[GGMLQuantizationType(t)]
        return None if dims[0] % blck else math.prod(dims) // blck * size
    old = nbytes(old_type)
    return [t for t in GGML_TYPES if t != old_type and nbytes(t) == old]


def interesting(rng: random.Random, old: int, width: int) -> int:
    bits = 8 * width
    top = (1 << bits) - 1
    pool = [0, 1, 2, 3, 4, 7, 8, 31, 32, 33, 64, 255, 256, 4096, 65535, 65536, (1 << 31) - 1, 1 << 31,
            (1 << 32) - 1, 1 << 32, (1 << 62), (1 << 63) - 1, 1 << 63, top, top - 1,
            old + 1, old - 1, old + rng.randint(2, 1000), old * 2, old // 2, old << 16, rng.getrandbits(bits)]
    return rng.choice(pool) & top


def interesting_float(rng: random.Random) -> float:
    return rng.choice([0.0, -0.0, -1.0, 1.0, 1e-30, 1e30, 1e38, -1e38, float("nan"), float("inf"),
                       float("-inf"), 65504.0, 2.0 ** 31, rng.uniform(-1e6, 1e6)])


def mutate(data: bytes, layout: Layout, rng: random.Random) -> tuple[bytes, list[str]]:
    """One to three stacked mutations; returns the new bytes and a description of each."""
    out = bytearray(data)
    notes = []
    by_kind: dict[str, list[Field]] = {}
    for f in layout.fields:
        by_kind.setdefault(f.kind, []).append(f)
    kinds = [k for k in KIND_WEIGHTS if k in by_kind or k in ("truncate_header", "truncate_data", "flip_bytes")]
    weights = [KIND_WEIGHTS[k] for k in kinds]
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        kind = rng.choices(kinds, weights)[0]
        if kind == "truncate_header":
            n = rng.randrange(0, layout.header_end)
            del out[n:]
            notes.append(f"truncate at header byte {n}")
            break  # later patches would land past the end
        if kind == "truncate_data":
            n = rng.randrange(layout.header_end, len(data))
            del out[n:]
            notes.append(f"truncate at data byte {n}")
            break
        if kind == "flip_bytes":
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(0, layout.header_end)
                out[i] = rng.randrange(256)
            notes.append("flip header bytes")
            continue
        f = rng.choice(by_kind[kind])
        if f.offset + f.width > len(out):
            continue
        if kind.endswith("_text"):
            i = f.offset + rng.randrange(f.width)
            v = rng.choice([0, 0xFF, 0x80, ord("."), ord("0"), ord("x"), rng.randrange(256)])
            out[i] = v
            notes.append(f"{kind}@{i}={v}")
            continue
        if kind == "arr_elem":  # one element of a numeric array (token types, ...)
            size = f.dims[0]
            i = f.offset + size * rng.randrange(f.width // size)
            v = interesting(rng, int.from_bytes(out[i:i + size], "little"), size)
            out[i:i + size] = v.to_bytes(size, "little")
            notes.append(f"arr_elem@{i}={v}")
            continue
        if kind == "swap_dims":
            dims = [out[f.offset + 8 * k:f.offset + 8 * k + 8] for k in range(f.width // 8)]
            rng.shuffle(dims)
            out[f.offset:f.offset + f.width] = b"".join(dims)
            notes.append(f"swap_dims@{f.offset}")
            continue
        if kind == "retype":
            same = same_size_types(f.dims[:-1], f.dims[-1])
            if not same:
                continue
            v = rng.choice(same)
            out[f.offset:f.offset + 4] = v.to_bytes(4, "little")
            notes.append(f"retype@{f.offset}: {f.dims[-1]}->{v}")
            continue
        if kind == "tensor_type" and rng.random() < 0.7:
            v = rng.choice(GGML_TYPES)
            out[f.offset:f.offset + 4] = v.to_bytes(4, "little")
        elif kind == "float":
            v = interesting_float(rng)
            out[f.offset:f.offset + f.width] = struct.pack("<f" if f.width == 4 else "<d", v)
        else:
            old = int.from_bytes(out[f.offset:f.offset + f.width], "little")
            v = interesting(rng, old, f.width)
            out[f.offset:f.offset + f.width] = v.to_bytes(f.width, "little")
        notes.append(f"{kind}@{f.offset}={v}")
    return bytes(out), notes


# ---- running cases in forked children ----------------------------------------------------

AS_LIMIT = 8 << 30      # address space of a child: a runaway allocation fails instead of swapping
RSS_SLACK_MB = 256      # peak RSS allowed above a clean load before a case counts as "memory"
TIMEOUT_S = 20.0


def _child(target: str, model: Path, mutated: Path, report: Path, stderr_path: Path) -> None:
    """Runs in the forked child; never returns."""
    code = 3
    try:
        os.environ["GGML_NO_BACKTRACE"] = "1"  # ggml would run gdb on itself when it aborts
        fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 2)
        if "libasan" not in os.environ.get("LD_PRELOAD", ""):  # ASan reserves terabytes of shadow
            resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))
        from kangaroo_edge import KangarooLM
        result: dict = {}
        try:
            if target == "model":
                lm = KangarooLM(mutated, n_ctx=64, n_threads=1, device="cpu")
            else:
                lm = KangarooLM(model, n_ctx=64, n_threads=1, device="cpu")
                lm.load_adapter(mutated)
            lm.generate("Hi", max_tokens=3)
            result = {"outcome": "loaded"}
        except Exception as e:  # the point: any Python exception is an acceptable answer
            result = {"outcome": "error", "type": type(e).__name__, "message": str(e)[:300]}
        report.write_text(json.dumps(result))
        code = 0
    finally:
        os._exit(code)


def run_case(target: str, model: Path, mutated: Path, workdir: Path) -> dict:
    report, err = workdir / "report.json", workdir / "stderr.txt"
    report.unlink(missing_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(target, model, mutated, report, err)
    start = time.monotonic()
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - start > TIMEOUT_S:
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            return {"outcome": "hang", "seconds": TIMEOUT_S}
        time.sleep(0.005)
    res = {"seconds": round(time.monotonic() - start, 3), "max_rss_mb": usage.ru_maxrss // 1024}
    if os.WIFSIGNALED(status) or os.WEXITSTATUS(status) != 0 or not report.exists():
        why = signal.Signals(os.WTERMSIG(status)).name if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}"
        tail = err.read_text(errors="replace")[:600] if err.exists() else ""
        res.update({"outcome": "crash", "why": why, "stderr": tail})
        return res
    res.update(json.loads(report.read_text()))
    return res


def verdict(res: dict, rss_limit_mb: int) -> Optional[str]:
    """None when the case behaved; else the kind of failure."""
    if res["outcome"] in ("crash", "hang"):
        return res["outcome"]
    if res.get("type") == "MemoryError" or "bad_alloc" in res.get("message", ""):
        return "memory"
    if res["max_rss_mb"] > rss_limit_mb:
        return "memory"
    return None


def make_adapter_file(model: Path, dst: Path) -> None:
    """The reference adapter, written in a child (it needs a loaded model)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            from kangaroo_edge import KangarooLM
            from kangaroo_edge.train.init_adapter import write_initial_adapter
            lm = KangarooLM(model, n_ctx=64, n_threads=1, device="cpu")
            write_initial_adapter(lm, dst, exit_layer=2)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if status != 0 or not dst.exists():
        raise RuntimeError("could not write the reference adapter")


def fuzz(n_cases: int, seed: int, model: Path, workdir: Path, only: Optional[int] = None,
         keep: Optional[Path] = None, log=print) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    adapter = workdir / "adapter.gguf"
    make_adapter_file(model, adapter)
    sources = {"model": model.read_bytes(), "adapter": adapter.read_bytes()}
    layouts = {k: walk(v) for k, v in sources.items()}
    mutated = workdir / "mutated.gguf"

    # clean loads: the baseline peak RSS, and a check that the harness itself works
    baseline = {}
    for target, data in sources.items():
        mutated.write_bytes(data)
        res = run_case(target, model, mutated, workdir)
        if res["outcome"] != "loaded":
            raise RuntimeError(f"the unmodified {target} does not load: {res}")
        baseline[target] = res["max_rss_mb"]
    rss_limit = max(baseline.values()) + RSS_SLACK_MB

    counts: Counter = Counter()
    messages: Counter = Counter()  # what the loaders said, to see which checks the cases reach
    failures = []
    t0 = time.monotonic()
    cases = [only] if only is not None else range(n_cases)
    for i in cases:
        rng = random.Random(seed * 1_000_003 + i)
        target = "adapter" if rng.random() < 0.3 else "model"
        data, notes = mutate(sources[target], layouts[target], rng)
        mutated.write_bytes(data)
        res = run_case(target, model, mutated, workdir)
        bad = verdict(res, rss_limit)
        counts[(target, res["outcome"] if bad is None else bad)] += 1
        if res["outcome"] == "error":
            messages[f'{res["type"]}: {res["message"].replace(str(mutated), "<file>")[:90]}'] += 1
        if bad is not None:
            failures.append({"case": i, "target": target, "mutations": notes, "failure": bad, **res})
            log(f"case {i} ({target}: {'; '.join(notes)}): {bad} {res}")
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                (keep / f"case{i}-{target}.gguf").write_bytes(data)
        elif only is not None:
            log(f"case {i} ({target}: {'; '.join(notes)}): {res}")
    return {
        "seed": seed, "cases": len(cases), "seconds": round(time.monotonic() - t0, 1),
        "baseline_rss_mb": baseline, "rss_limit_mb": rss_limit,
        "counts": {f"{t}/{o}": n for (t, o), n in sorted(counts.items())},
        "messages": dict(messages.most_common()),
        "failures": failures,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", type=int, help="run just this case number (replay)")
    p.add_argument("--model", help="model GGUF (default: the embedded SmolLM2)")
    p.add_argument("--workdir", help="where the mutated files are written (default: a temp dir)")
    p.add_argument("--keep-failures", help="directory to save the files of failing cases")
    p.add_argument("--json", help="write the summary here")
    args = p.parse_args()

    from kangaroo_edge.models import default_model_path
    model = Path(args.model) if args.model else default_model_path()
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="fuzz_gguf."))
    summary = fuzz(args.cases, args.seed, model, workdir, args.only,
                   Path(args.keep_failures) if args.keep_failures else None)
    for name in ("mutated.gguf", "adapter.gguf", "report.json", "stderr.txt"):
        (workdir / name).unlink(missing_ok=True)
    text = json.dumps(summary, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    print(json.dumps({k: v for k, v in summary.items() if k != "failures"}, indent=1))
    print(f"{len(summary['failures'])} failing cases out of {summary['cases']}")
    sys.exit(1 if summary["failures"] else 0)


if __name__ == "__main__":
    main()
