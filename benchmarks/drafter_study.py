"""Drafter kinds compared on the same features (issue 24): the paper's adapter (a), deep context
(b) and the EAGLE-style head (c), each trained from the same feature directory on the same split,
measured on the held-out sequences at draft depths 1..4:

    top1       the drafter's top token (within the draft vocabulary) is the model's greedy token
    accept     expected acceptance of a sampled draft, sum_v min(p_v, q_v)

Depth k is the k-th draft of a cycle given the k-1 before it were right (see drafter_models.py).
A learning curve is the same run at --train-fraction 1/8, 1/4, 1/2, 1.

    python benchmarks/drafter_study.py --features runs/exp/features -m SmolLM2.gguf \\
        --kind adapter,deep,eagle --epochs 4 --out runs/exp/study.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
from gguf import GGUFReader
from torch.utils.data import DataLoader, DistributedSampler

from kangaroo_edge.convert.adapter_gguf import read_adapter_gguf, tensors_to_adapter_state
from kangaroo_edge.train.adapter_model import AdapterConfig
from kangaroo_edge.train.base_model import (load_layer_ffn, load_lm_head, load_rope_freq_factors,
                                             read_base_model_info)
from kangaroo_edge.train.drafter_models import DeepContextAdapter, EagleConfig, EagleHead, FFNAdapter
from kangaroo_edge.train.draft_vocab import DEFAULT_SIZE as DEFAULT_DRAFT_VOCAB
from kangaroo_edge.train.feature_shards import FeatureShards, SequenceDataset
from kangaroo_edge.train.export import checkpoint_to_gguf
from kangaroo_edge.train.fit import (CHECKPOINT_FORMAT, FitConfig, RestrictedHead, build_adapter, draft_vocabulary,
                                     lr_lambda, make_optimizer, restricted_agreement_stats,
                                     restricted_soft_cross_entropy, save_checkpoint)
from kangaroo_edge.train.precision import PRECISIONS, autocast, default_precision
from kangaroo_edge.train.teacher import TeacherTopK, TeacherWindows, collate_with_teacher
from kangaroo_edge.train.jsonl import append_jsonl

DEPTHS = 4          # measured draft depths
TRAIN_DEPTHS = 3    # depths (b) and (c) train on (training-time test)
CPU = torch.device("cpu")


class Kind:
    """One drafter kind: its module and how it maps a batch to outputs per depth."""

    def __init__(self, name: str, model, lr: float):
        self.name, self.model, self.lr = name, model, lr

    def outputs(self, batch: dict, head: torch.Tensor, depths: list[int]) -> dict[int, torch.Tensor]:
        pos = batch["positions"]
        if self.name in ("adapter", "adapter-ffn"):
            out = self.model(batch["exit"].float(), pos)
            return {d: out for d in depths}      # the adapter's inputs are exact at every depth
        if self.name == "deep":
            return {d: self.model(batch["exit"].float(), batch["final"].float(), pos, d) for d in depths}
        outs = self.model(batch["final"].float(), head[batch["tokens"]], pos, max(depths))
        return {d: outs[d - 1] for d in depths}


def make_kind(name: str, a, model_path: str, reader, acfg: AdapterConfig, exit_layer: int, info) -> Kind:
    freq = load_rope_freq_factors(model_path, reader)
    torch.manual_seed(a.seed)
    if name in ("adapter", "adapter-ffn"):
        fc = FitConfig(features=a.features, model=model_path, out="", seed=a.seed)
        adapter = build_adapter(fc, reader, acfg, exit_layer)
        if name == "adapter":
            return Kind(name, adapter, a.lr)
        return Kind(name, FFNAdapter(adapter, load_layer_ffn(model_path, exit_layer, reader)), a.lr)
    if name == "deep":
        m = DeepContextAdapter(acfg, freq)
        # start from the adapter's usual init: the exit layer's attention and the output norm
        fc = FitConfig(features=a.features, model=model_path, out="", seed=a.seed)
        init = build_adapter(fc, reader, acfg, exit_layer).state_dict()
        m.attn.load_state_dict({k: v for k, v in init.items() if k.startswith("attn_") and k != "attn_norm.weight"})
        m.attn_norm.weight.data.copy_(init["attn_norm.weight"])
        m.deep_norm.weight.data.copy_(init["attn_norm.weight"])
        m.output_norm.weight.data.copy_(init["output_norm.weight"])
        return Kind(name, m, a.lr)
    if name.startswith("eagle"):
        m = EagleHead(acfg, EagleConfig(n_ff=a.eagle_ff if name == "eagle-ffn" else 0), freq)
        return Kind(name, m, a.eagle_lr)
    raise ValueError(f"unknown drafter kind {name!r}")


@torch.no_grad()
def evaluate(kind: Kind, loader, head, rh: RestrictedHead) -> dict:
    kind.model.eval()
    sums = torch.zeros(DEPTHS, 2, dtype=torch.float64)
    n = 0
    for batch in loader:
        mask = batch["loss_mask"]
        p, greedy = rh.pool_top_k(batch["t_ids"][mask], batch["t_probs"][mask]), batch["t_ids"][mask][:, 0]
        outs = kind.outputs(batch, head, list(range(1, DEPTHS + 1)))
        stats = {}  # by output tensor: the adapter's depths share one (its inputs are exact at every depth)
        for d, out in outs.items():
            if id(out) not in stats:
                stats[id(out)] = restricted_agreement_stats(out[mask], p, greedy, rh)[2:].double()
            sums[d - 1] += stats[id(out)]
        n += int(mask.sum())
    kind.model.train()
    return {"positions": n, **{f"top1_d{d + 1}": sums[d, 0].item() / n for d in range(DEPTHS)},
            **{f"accept_d{d + 1}": sums[d, 1].item() / n for d in range(DEPTHS)}}


def evaluate_all(kind: Kind, evals: dict, head, rh) -> dict:
    """Metrics on each evaluation set, prefixed by its name past the first (the held-out split)."""
    out = {}
    for i, (name, loader) in enumerate(evals.items()):
        m = evaluate(kind, loader, head, rh)
        out.update(m if i == 0 else {f"{name}_{k}": v for k, v in m.items()})
    return out


def train(kind: Kind, train_loader, sampler, evals: dict, head, rh, a, log) -> list[dict]:
    fc = FitConfig(features="", model="", out="", lr=kind.lr)
    opt = make_optimizer(kind.model, fc)
    steps = a.epochs * len(train_loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps, fc.warmup_ratio, fc.min_lr_ratio))
    rng = random.Random(a.seed)
    history = [{"epoch": 0, **evaluate_all(kind, evals, head, rh)}]
    log(kind.name, history[-1])
    for epoch in range(1, a.epochs + 1):
        sampler.set_epoch(epoch)
        t0, loss_sum = time.perf_counter(), 0.0
        for batch in train_loader:
            mask = batch["loss_mask"]
            if not mask.any():
                continue
            p = rh.pool_top_k(batch["t_ids"][mask], batch["t_probs"][mask])
            depths = [1] if kind.name.startswith("adapter") else \
                list(range(1, TRAIN_DEPTHS + 1)) if kind.name.startswith("eagle") else [1, rng.randint(2, TRAIN_DEPTHS)]
            with autocast(CPU, a.precision):
                outs = kind.outputs(batch, head, depths)
                loss = sum(restricted_soft_cross_entropy(o[mask], p, rh).mean() for o in outs.values())
            loss = loss / len(outs)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(kind.model.parameters(), fc.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            loss_sum += loss.item()
        history.append({"epoch": epoch, "train_loss": loss_sum / len(train_loader),
                        "epoch_seconds": time.perf_counter() - t0, **evaluate_all(kind, evals, head, rh)})
        log(kind.name, history[-1])
    return history


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", required=True)
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--kind", default="adapter,deep,eagle", help="adapter, adapter-ffn, deep, eagle, eagle-ffn (comma-separated)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-2, help="adapter and deep")
    ap.add_argument("--eagle-lr", type=float, default=3e-3)
    ap.add_argument("--eagle-ff", type=int, default=1536)
    ap.add_argument("--train-fraction", type=float, default=1.0)
    ap.add_argument("--prompt-positions", action="store_true",
                    help="also train on the prompts' positions (teacher-forced text); evaluation stays on answers")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--heldout-frac", type=float, default=0.05)
    ap.add_argument("--draft-vocab", type=int, default=DEFAULT_DRAFT_VOCAB)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--precision", choices=PRECISIONS, default=default_precision(CPU),
                    help="the training step's products (default: bfloat16 where the CPU has it natively)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="append one JSON line per kind (its history) here")
    ap.add_argument("--eval-features", action="append", default=[], metavar="NAME=DIR",
                    help="also measure on every sequence of another feature directory (e.g. answers to "
                         "Spec-Bench questions, never trained on); repeatable")
    ap.add_argument("--eval-categories", action="append", default=[], metavar="NAME=JSONL",
                    help="also report an --eval-features set per category: sequence i is line i of this JSONL "
                         "(its \"category\"), as the responses stage writes a Spec-Bench file's answers")
    ap.add_argument("--save", help="directory for each trained drafter's state dict")
    ap.add_argument("--export", metavar="GGUF",
                    help="write the trained adapter kind as an adapter GGUF (its checkpoint, in fit.py's format, beside it)")
    ap.add_argument("--baseline", action="append", default=[], metavar="GGUF",
                    help="also measure this adapter GGUF (e.g. the shipped one) on the same sets; repeatable")
    ap.add_argument("--baseline-vocab", action="append", type=int, default=[], metavar="N",
                    help="also measure each baseline with the N tokens the model most often predicts in the "
                         "training answers as its draft head (0: the whole vocabulary); repeatable")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    shards = FeatureShards(a.features)
    reader = GGUFReader(a.model)
    info = read_base_model_info(a.model, reader)
    if not info.tied and any(k.startswith("eagle") for k in a.kind.split(",") if k):
        raise SystemExit("the eagle kind reads token embeddings as the tied head's rows: a tied model only, for now")
    head = load_lm_head(a.model, reader)
    acfg = AdapterConfig.from_base(info)
    train_ids, held_ids = shards.split(a.heldout_frac, a.seed)   # fit.py's split
    train_ids = train_ids[:max(1, round(len(train_ids) * a.train_fraction))]
    log_teacher = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    teacher = TeacherTopK(shards, head, log=log_teacher)
    train_ds = SequenceDataset(shards, train_ids, a.max_len, prompt_positions=a.prompt_positions)
    sampler = DistributedSampler(TeacherWindows(train_ds, teacher), num_replicas=1, rank=0, shuffle=True, seed=a.seed)
    train_loader = DataLoader(sampler.dataset, batch_size=a.batch_size, sampler=sampler, collate_fn=collate_with_teacher)
    held_loader = DataLoader(TeacherWindows(SequenceDataset(shards, held_ids, a.max_len), teacher),
                             batch_size=a.batch_size, collate_fn=collate_with_teacher)
    evals = {"heldout": held_loader}
    for spec in a.eval_features:
        name, _, directory = spec.partition("=")
        other = FeatureShards(directory)
        if other.fingerprint != shards.fingerprint or other.exit_layer != shards.exit_layer:
            raise SystemExit(f"{directory}: features of another model or exit layer")
        other_teacher = TeacherTopK(other, head, log=log_teacher)
        groups = {name: range(len(other))}
        for cat_spec in a.eval_categories:
            cat_name, _, path = cat_spec.partition("=")
            if cat_name == name:
                cats = [json.loads(line)["category"] for line in Path(path).read_text().splitlines() if line.strip()]
                for c in sorted(set(cats[:len(other)])):
                    groups[f"{name}.{c}"] = [i for i in range(len(other)) if cats[i] == c]
        for group, ids in groups.items():
            evals[group] = DataLoader(TeacherWindows(SequenceDataset(other, ids, a.max_len), other_teacher),
                                      batch_size=a.batch_size, collate_fn=collate_with_teacher)
    vocab, coverage = draft_vocabulary(teacher, train_ds, a.draft_vocab)
    rh = RestrictedHead.build(head, vocab)
    print(f"{len(train_loader.dataset)} training windows ({a.train_fraction:g} of the data), "
          f"{len(held_loader.dataset)} held-out; draft vocabulary {len(vocab)} (the greedy token at {100 * coverage:.1f}% "
          "of the training answers' positions)",
          file=sys.stderr, flush=True)

    def log(name, m):
        print(f"{name} epoch {m['epoch']}: " + " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                                    for k, v in m.items() if k != "epoch"), file=sys.stderr, flush=True)

    for path in a.baseline:  # an adapter GGUF as it ships: measured, not trained
        kind = Kind("adapter", build_adapter(FitConfig(features=a.features, model=a.model, out=""), reader, acfg,
                                             shards.exit_layer), 0.0)
        meta, tensors = read_adapter_gguf(path)
        kind.model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors_to_adapter_state(tensors).items()})
        own = RestrictedHead.build(head, meta.draft_vocab) if meta.draft_vocab else RestrictedHead.build(head, range(len(head)))
        log(Path(path).name, {"epoch": 0, **evaluate_all(kind, evals, head, own)})  # with its own draft head
        for size in a.baseline_vocab:  # what a larger (or smaller) draft head would give the same weights
            other_vocab, _ = draft_vocabulary(teacher, train_ds, size or len(head))
            log(f"{Path(path).name} vocab {size or len(head)}",
                {"epoch": 0, **evaluate_all(kind, evals, head, RestrictedHead.build(head, other_vocab))})
    for name in filter(None, a.kind.split(",")):
        kind = make_kind(name, a, a.model, reader, acfg, shards.exit_layer, info)
        n_params = sum(p.numel() for p in kind.model.parameters())
        print(f"{name}: {n_params:,} parameters", file=sys.stderr, flush=True)
        history = train(kind, train_loader, sampler, evals, head, rh, a, log)
        if a.save:
            Path(a.save).mkdir(parents=True, exist_ok=True)
            torch.save({"kind": name, "state_dict": kind.model.state_dict(), "draft_vocab": vocab, "history": history},
                       Path(a.save) / f"{name}-{a.train_fraction:g}.pt")
        if a.export and name == "adapter":
            ckpt = Path(a.export).with_suffix(".pt")
            save_checkpoint(ckpt, {"format": CHECKPOINT_FORMAT, "config": acfg.to_dict(), "exit_layer": shards.exit_layer,
                                   "fingerprint": shards.fingerprint, "base_arch": info.arch, "history": history,
                                   "state_dict": kind.model.state_dict()})
            checkpoint_to_gguf(ckpt, a.model, a.export, draft_vocab=[int(t) for t in vocab])
        if a.out:
            append_jsonl(a.out, {"kind": name, "parameters": n_params, "train_fraction": a.train_fraction,
                                 "epochs": a.epochs, "lr": kind.lr, "draft_vocab": len(vocab),
                                 "exit_layer": shards.exit_layer, "history": history})
    return 0


if __name__ == "__main__":
    sys.exit(main())
