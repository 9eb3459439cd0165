"""Train the Kangaroo adapter on extracted features (the paper's recipe, section 1 of DESIGN.md).

Loss: soft-label cross-entropy between the full model's next-token distribution p = softmax(final
normed @ head^T) and the adapter's q = softmax(adapter(exit) @ head^T), at the same position, on
response positions only; no ground-truth term. Only the adapter trains; the LM head is frozen.

With a draft vocabulary (`draft_vocab`, the default: the N tokens the teacher most often predicts
at the training answers' positions), the loss is over those N tokens plus one pooled "other" bucket
(RestrictedHead), and p comes from the teacher's top-K cache (teacher.py) instead of the full head:
both cut what dominates a step, the [positions, n_vocab] matmuls. The draft vocabulary is saved in
the checkpoint and becomes the exported adapter's draft head.

One process by default; under `torchrun --nproc_per_node=K -m kangaroo_edge.train.fit ...` it runs
DDP (gloo on CPU, NCCL on CUDA), detected from WORLD_SIZE/RANK. Only rank 0 writes files.

    python -m kangaroo_edge.train.fit --features FEATS --model base.gguf -o adapter.pt
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from gguf import GGUFReader
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from .adapter_model import AdapterConfig, KangarooAdapter
from .base_model import (load_layer_attention, load_lm_head, load_rope_freq_factors, model_fingerprint,
                         read_base_model_info)
from .draft_vocab import DEFAULT_SIZE as DEFAULT_DRAFT_VOCAB
from .draft_vocab import frequent_tokens
from .feature_shards import FeatureShards, SequenceDataset, collate_sequences
from .precision import PRECISIONS, autocast, resolve_precision
from .teacher import TeacherTopK, TeacherWindows, collate_with_teacher, compute_missing, pooled_targets

DEFAULT_LR = 1e-2               # measured best for small adapters (docs/training.md: lr sweep)
DEFAULT_EPOCHS = 10
DEFAULT_BATCH_SIZE = 8          # windows per step and process
DEFAULT_MAX_LEN = 1024          # positions per window
DEFAULT_WARMUP_RATIO = 0.05
DEFAULT_MIN_LR_RATIO = 0.1      # cosine decays to this fraction of lr
DEFAULT_WEIGHT_DECAY = 0.01
DEFAULT_GRAD_CLIP = 1.0
DEFAULT_HELDOUT_FRAC = 0.05
DEFAULT_CHUNK = 512             # positions per logits chunk: 512 x 151936 f32 logits = 300 MB
BETAS = (0.9, 0.95)
CHECKPOINT_FORMAT = "kangaroo-adapter-checkpoint"


@dataclass
class FitConfig:
    features: str
    model: str
    out: str
    exit_layer: int | None = None   # checked against the features when given
    lr: float = DEFAULT_LR
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    max_len: int = DEFAULT_MAX_LEN
    warmup_ratio: float = DEFAULT_WARMUP_RATIO
    min_lr_ratio: float = DEFAULT_MIN_LR_RATIO
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    grad_clip: float = DEFAULT_GRAD_CLIP
    heldout_frac: float = DEFAULT_HELDOUT_FRAC
    # train on this fraction of the training sequences (the held-out set stays the same): for
    # learning curves against data size
    train_fraction: float = 1.0
    chunk: int = DEFAULT_CHUNK
    # the draft head: the N tokens the teacher most often predicts at the training answers' positions;
    # the loss is over them + a pooled "other" bucket, against the teacher's cached top-K (RestrictedHead,
    # teacher.py), and held-out agreement is a draft head's over them (restricted_agreement_stats).
    # 0, or N >= n_vocab: the full vocabulary, the teacher computed at every step.
    draft_vocab: int = DEFAULT_DRAFT_VOCAB
    # also train on the prompts' positions (teacher-forced text); held-out metrics stay on answers
    prompt_positions: bool = False
    init: str = "layer"             # "layer": copy a base layer's attention; "random"
    init_layer: int | None = None   # default: the exit layer (the block the adapter stands in for)
    seed: int = 0
    resume: bool = True             # continue from `out` when it exists
    device: str | None = None       # default: cuda when available, else cpu
    precision: str | None = None    # of the step's products (PRECISIONS); default: bf16 where native, the loss float32
    num_workers: int = 0
    progress: bool = True


# ---------------------------------------------------------------- distributed setup

@dataclass
class Dist:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def torch_device(device: str | None) -> torch.device:
    """The --fit-device's torch device: cuda when available unless told."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def setup_distributed(device: str | None) -> Dist:
    """One process, or DDP when launched by torchrun (WORLD_SIZE > 1)."""
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    dev = torch_device(device)
    use_cuda = dev.type == "cuda"
    if use_cuda:
        if world > 1:
            dev = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        # the teacher's cache may take an hour before the first collective call (default timeout: 30 min)
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(hours=12))
    return Dist(rank, world, dev)


def all_reduce_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.world > 1:
        dist.all_reduce(t)
    return t


# ---------------------------------------------------------------- loss and metrics

def soft_cross_entropy(h: torch.Tensor, target: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """h, target: [P, n_embd] adapter / full-model normed states; head: [n_vocab, n_embd].
    Returns the per-position loss [P]: -sum_v p_v log q_v."""
    with torch.no_grad(), torch.autocast(h.device.type, enabled=False):  # the teacher exact under autocast
        p = F.softmax(target.float() @ head.T, dim=-1)  # [P, n_vocab] full model
    log_q = F.log_softmax((h @ head.T).float(), dim=-1)  # [P, n_vocab] adapter
    return -(p * log_q).sum(-1)


@dataclass
class RestrictedHead:
    """The LM head cut to a draft vocabulary plus one pooled "other" bucket, for a cheaper loss.

    The adapter's logits are computed for the K draft tokens only; the bucket's logit stands for
    the adapter's mass on the other V - K tokens with Jensen's lower bound of their log-sum-exp,
    log(V - K) + h . mean(head rows of the others): one extra row instead of V - K."""
    vocab: torch.Tensor            # [K] int64 token ids, ascending
    rows: torch.Tensor             # [K, n_embd] head rows of the draft tokens
    other_row: torch.Tensor | None  # [n_embd] mean head row of the other tokens (None: K == V)
    log_n_other: float
    row_of: torch.Tensor           # [V] int64: each token's row, K ("other") for tokens outside

    @classmethod
    def build(cls, head: torch.Tensor, vocab) -> RestrictedHead:
        vocab = torch.as_tensor(sorted(set(int(t) for t in vocab)), dtype=torch.int64, device=head.device)
        rest = torch.ones(head.shape[0], dtype=torch.bool, device=head.device)
        rest[vocab] = False
        n_rest = int(rest.sum())
        other = head[rest].mean(0) if n_rest else None
        row_of = torch.full((head.shape[0],), len(vocab), dtype=torch.int64, device=head.device)
        row_of[vocab] = torch.arange(len(vocab), device=head.device)
        return cls(vocab, head[vocab], other, math.log(n_rest) if n_rest else 0.0, row_of)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """[P, K (+ 1)]: the draft tokens' logits and, unless K == V, the "other" bucket's."""
        logits = h @ self.rows.T
        if self.other_row is None:
            return logits
        return torch.cat([logits, (h @ self.other_row + self.log_n_other)[:, None]], dim=-1)

    def pool(self, p: torch.Tensor) -> torch.Tensor:
        """A full distribution [P, V] on the draft rows + "other": [P, K (+ 1)]."""
        p_k = p[:, self.vocab]
        if self.other_row is None:
            return p_k
        return torch.cat([p_k, (1.0 - p_k.sum(-1, keepdim=True)).clamp_min(0.0)], dim=-1)

    def pool_top_k(self, t_ids: torch.Tensor, t_probs: torch.Tensor) -> torch.Tensor:
        """The teacher's cached top-K [P, K_teacher] on the draft rows + "other" (the mass beyond the
        top K goes there too): [P, K (+ 1)]."""
        p = pooled_targets(t_ids, t_probs, self.row_of, len(self.vocab))
        return p if self.other_row is not None else p[:, :-1]


def restricted_soft_cross_entropy(h: torch.Tensor, p: torch.Tensor, rh: RestrictedHead) -> torch.Tensor:
    """soft_cross_entropy over the draft vocabulary + "other": the full model's distribution pooled
    onto the K draft tokens and one bucket (p [P, K + 1]: RestrictedHead.pool or pool_top_k),
    against the adapter's softmax over the K draft logits and the bucket's logit. Equals
    soft_cross_entropy when the draft vocabulary is the whole vocabulary. h: [P, n_embd]; returns [P]."""
    return -(p * F.log_softmax(rh.logits(h).float(), dim=-1)).sum(-1)


@torch.no_grad()
def agreement_stats(h: torch.Tensor, target: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """Sums over positions of [cross-entropy, KL(p||q), top-1 agreement, expected acceptance].
    Expected acceptance of a draft from q checked against p is sum_v min(p_v, q_v)."""
    log_p = F.log_softmax(target @ head.T, dim=-1)      # [P, n_vocab]
    p = log_p.exp()
    log_q = F.log_softmax(h @ head.T, dim=-1)
    q = log_q.exp()
    ce = -(p * log_q).sum(-1)
    kl = (p * (log_p - log_q)).sum(-1)
    top1 = (log_p.argmax(-1) == log_q.argmax(-1)).float()
    accept = torch.minimum(p, q).sum(-1)
    return torch.stack([ce.sum(), kl.sum(), top1.sum(), accept.sum()])


@torch.no_grad()
def restricted_agreement_stats(h: torch.Tensor, p: torch.Tensor, greedy: torch.Tensor,
                               rh: RestrictedHead) -> torch.Tensor:
    """agreement_stats as a draft head of the restricted tokens drafts (the restricted loss never
    trains the other tokens' logits, so a full-vocabulary argmax would measure untrained rows):
    q is its softmax over them, p the teacher pooled as in restricted_soft_cross_entropy, greedy
    [P] the teacher's most likely token; the cross-entropy and KL are the training loss's."""
    q = F.softmax(h @ rh.rows.T, dim=-1)                 # [P, K]
    ce = restricted_soft_cross_entropy(h, p, rh)
    kl = ce + (p * p.clamp_min(1e-30).log()).sum(-1)     # ce - H(pooled p)
    top1 = (rh.vocab[q.argmax(-1)] == greedy).float()
    accept = torch.minimum(p[:, :len(rh.vocab)], q).sum(-1)
    return torch.stack([ce.sum(), kl.sum(), top1.sum(), accept.sum()])


def _selected(model, batch: dict, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Adapter and full-model states at the trained positions: both [P, n_embd] float32 (the
    full model's None where the batch has no final states: a fit against the cached teacher)."""
    x = batch["exit"].to(device, torch.float32)             # [B, T, n_embd]
    h = model(x, batch["positions"].to(device))             # [B, T, n_embd]
    mask = batch["loss_mask"].to(device)                    # [B, T]
    final = batch.get("final")
    return h[mask], None if final is None else final.to(device)[mask].float()


def _cached_teacher(batch: dict, rh: RestrictedHead, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher at the trained positions, from its top-K cache: (pooled p [P, K + 1], greedy [P])."""
    mask = batch["loss_mask"]
    t_ids, t_probs = batch["t_ids"][mask].to(device), batch["t_probs"][mask].to(device)
    return rh.pool_top_k(t_ids, t_probs), t_ids[:, 0]


# ---------------------------------------------------------------- train and evaluate

def train_step(model, batch: dict, head: torch.Tensor, opt, sched, cfg: FitConfig, d: Dist,
               restricted: RestrictedHead | None = None, precision: str = "float32") -> float:
    """One optimizer step; returns the mean loss over the batch's trained positions (over the
    draft vocabulary + "other", against the cached teacher, when `restricted` is given)."""
    with autocast(d.device, precision):
        h, target = _selected(model, batch, d.device)       # [P, n_embd] each
    if restricted is not None:
        target = _cached_teacher(batch, restricted, d.device)[0]   # [P, K + 1]
    n = h.shape[0]
    # The logits of all positions at once would not fit ([P, n_vocab]): run the head chunk by chunk
    # against a detached copy of h, collect dL/dh, then backpropagate through the adapter once.
    h_leaf = h.detach().requires_grad_()
    total = 0.0
    for s in range(0, n, cfg.chunk):
        hs, ts = h_leaf[s:s + cfg.chunk], target[s:s + cfg.chunk]
        with autocast(d.device, precision):
            per_pos = soft_cross_entropy(hs, ts, head) if restricted is None else \
                restricted_soft_cross_entropy(hs, ts, restricted)
        loss = per_pos.sum() / n
        loss.backward()
        total += loss.item()
    # also when n == 0, so every DDP rank joins the gradient all-reduce
    h.backward(h_leaf.grad if h_leaf.grad is not None else torch.zeros_like(h))
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return total


@torch.no_grad()
def evaluate(model: KangarooAdapter, loader, head: torch.Tensor, cfg: FitConfig, d: Dist,
             restricted: RestrictedHead | None = None) -> dict:
    model.eval()
    sums = torch.zeros(5, dtype=torch.float64, device=d.device)  # ce, kl, top1, accept, positions
    for batch in loader:
        h, target = _selected(model, batch, d.device)
        if restricted is not None:
            p, greedy = _cached_teacher(batch, restricted, d.device)
        for s in range(0, h.shape[0], cfg.chunk):
            c = slice(s, s + cfg.chunk)
            stats = agreement_stats(h[c], target[c], head) if restricted is None else \
                restricted_agreement_stats(h[c], p[c], greedy[c], restricted)
            sums[:4] += stats.double()
        sums[4] += h.shape[0]
    model.train()
    ce, kl, top1, accept, n = all_reduce_sum(sums, d).tolist()
    n = max(n, 1.0)
    return {"heldout_loss": ce / n, "heldout_kl": kl / n, "top1_agreement": top1 / n,
            "expected_acceptance": accept / n, "heldout_positions": int(n)}


def lr_lambda(total_steps: int, warmup_ratio: float, min_lr_ratio: float):
    """Linear warmup, then cosine decay to min_lr_ratio."""
    warmup = max(1, int(total_steps * warmup_ratio))

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    return f


def make_optimizer(model: KangarooAdapter, cfg: FitConfig) -> torch.optim.AdamW:
    # no weight decay on norm weights and biases
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=BETAS)


# ---------------------------------------------------------------- model, data, checkpoints

def build_adapter(cfg: FitConfig, reader: GGUFReader, acfg: AdapterConfig, exit_layer: int) -> KangarooAdapter:
    torch.manual_seed(cfg.seed)  # identical init on every rank
    model = KangarooAdapter(acfg, load_rope_freq_factors(cfg.model, reader))
    if cfg.init == "layer":
        layer = exit_layer if cfg.init_layer is None else cfg.init_layer
        model.load_state_dict(load_layer_attention(cfg.model, layer, reader))
    elif cfg.init != "random":
        raise ValueError(f"init must be 'layer' or 'random', got {cfg.init!r}")
    return model


def make_loaders(shards: FeatureShards, cfg: FitConfig, d: Dist, teacher: TeacherTopK | None = None):
    """Training and held-out loaders (their windows with the teacher's cached top-K when given)."""
    train_ids, held_ids = shards.split(cfg.heldout_frac, cfg.seed)
    if not 0.0 < cfg.train_fraction <= 1.0:
        raise ValueError(f"train_fraction must be in (0, 1], got {cfg.train_fraction}")
    train_ids = train_ids[:max(1, round(len(train_ids) * cfg.train_fraction))]
    # against the cached teacher the final states are never read: the windows leave them on disk
    with_final = teacher is None
    train_ds = SequenceDataset(shards, train_ids, cfg.max_len, prompt_positions=cfg.prompt_positions,
                               with_final=with_final)
    held_ds = SequenceDataset(shards, held_ids, cfg.max_len, with_final=with_final)
    if len(train_ds) == 0 or len(held_ds) == 0:
        raise ValueError(f"{shards.directory}: {len(shards)} sequences give {len(train_ds)} training and "
                         f"{len(held_ds)} held-out windows (heldout_frac={cfg.heldout_frac}); need both")
    collate = collate_sequences
    if teacher is not None:
        train_ds, held_ds, collate = TeacherWindows(train_ds, teacher), TeacherWindows(held_ds, teacher), collate_with_teacher
    # DistributedSampler in one process too: the shuffle is then a function of (seed, epoch) only
    sampler = DistributedSampler(train_ds, num_replicas=d.world, rank=d.rank, shuffle=True, seed=cfg.seed)
    train = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, collate_fn=collate,
                       num_workers=cfg.num_workers)
    held = DataLoader(held_ds, batch_size=cfg.batch_size, sampler=list(range(d.rank, len(held_ds), d.world)),
                      collate_fn=collate, num_workers=cfg.num_workers)
    return train, held, sampler


def draft_vocabulary(teacher: TeacherTopK, dataset: SequenceDataset, size: int) -> tuple[list[int], float]:
    """The `size` tokens the teacher most often predicts at the dataset's trained positions, and the
    share of those positions whose prediction they hold."""
    return frequent_tokens(teacher.greedy_counts(dataset), size)


def metrics_path(out: str | Path) -> Path:
    return Path(out).with_suffix(".metrics.json")


def save_checkpoint(path: str | Path, state: dict) -> None:
    tmp = Path(str(path) + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # an interrupted save never leaves a half-written checkpoint
    metrics_path(path).write_text(json.dumps(state["history"], indent=1))


def load_checkpoint(path: str | Path) -> dict:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a Kangaroo adapter checkpoint")
    return ckpt


def _check_resume(ckpt: dict, acfg: AdapterConfig, exit_layer: int, fingerprint: str, path) -> None:
    want = {"config": acfg.to_dict(), "exit_layer": exit_layer, "fingerprint": fingerprint}
    for key, value in want.items():
        if ckpt[key] != value:
            raise ValueError(f"{path}: checkpoint {key} {ckpt[key]!r} differs from this run's {value!r}; "
                             "delete it (or pass --fresh to python -m kangaroo_edge.train.fit) to start over")


# ---------------------------------------------------------------- the loop

def fit(cfg: FitConfig) -> list[dict]:
    """Trains (or resumes) and returns the metrics history, one dict per epoch (epoch 0 = before
    training). Rank 0 writes `cfg.out` after every epoch and the history next to it."""
    d = setup_distributed(cfg.device)
    precision = resolve_precision(cfg.precision, d.device)
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if d.is_main else (lambda msg: None)
    shards = FeatureShards(cfg.features)
    reader = GGUFReader(cfg.model)
    info = read_base_model_info(cfg.model, reader)
    fingerprint = model_fingerprint(cfg.model)
    if shards.fingerprint != fingerprint:
        raise ValueError(f"{cfg.features}: features were made with model {shards.fingerprint}, "
                         f"but {cfg.model} is {fingerprint}")
    if shards.n_embd != info.n_embd:
        raise ValueError(f"{cfg.features}: n_embd {shards.n_embd} != {info.n_embd} of {cfg.model}")
    if cfg.exit_layer is not None and cfg.exit_layer != shards.exit_layer:
        raise ValueError(f"{cfg.features}: features are for exit layer {shards.exit_layer}, not {cfg.exit_layer}")
    exit_layer = shards.exit_layer
    acfg = AdapterConfig.from_base(info)
    head = load_lm_head(cfg.model, reader).to(d.device)     # [n_vocab, n_embd], frozen

    model = build_adapter(cfg, reader, acfg, exit_layer).to(d.device)
    if cfg.draft_vocab < 0:
        raise ValueError(f"draft_vocab must be >= 0 (0: the full vocabulary), got {cfg.draft_vocab}")
    teacher = None
    if 0 < cfg.draft_vocab < info.n_vocab:
        if d.world > 1:  # each process computes its share of the missing cache, then all read all of it
            compute_missing(shards, head, rank=d.rank, world=d.world, log=log)
            dist.barrier()
        teacher = TeacherTopK(shards, head, log=log)
    train_loader, held_loader, sampler = make_loaders(shards, cfg, d, teacher)
    restricted, vocab = None, None
    if teacher is not None:
        vocab, coverage = draft_vocabulary(teacher, sampler.dataset.base, cfg.draft_vocab)
        restricted = RestrictedHead.build(head, vocab)
        log(f"draft vocabulary: {len(vocab)} tokens, the teacher's greedy token at {100 * coverage:.1f}% of the "
            "training answers' positions; the loss over them + other")
    opt = make_optimizer(model, cfg)
    total_steps = cfg.epochs * len(train_loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total_steps, cfg.warmup_ratio, cfg.min_lr_ratio))

    history: list[dict] = []
    start_epoch = 0
    if cfg.resume and Path(cfg.out).exists():
        ckpt = load_checkpoint(cfg.out)
        _check_resume(ckpt, acfg, exit_layer, fingerprint, cfg.out)
        model.load_state_dict(ckpt["state_dict"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        start_epoch, history = ckpt["epoch"], ckpt["history"]
        log(f"resuming {cfg.out} after epoch {start_epoch}")
    else:
        history.append({"epoch": 0, **evaluate(model, held_loader, head, cfg, d, restricted)})
        log(_format(history[-1]))

    ddp = DistributedDataParallel(model) if d.world > 1 else model
    n_params = sum(p.numel() for p in model.parameters())
    log(f"adapter: {n_params:,} parameters; {len(train_loader.dataset)} training windows, "
        f"{len(held_loader.dataset)} held-out; {d.world} process(es) on {d.device}, {precision} products")
    bar = tqdm(total=total_steps, initial=start_epoch * len(train_loader), disable=not (d.is_main and cfg.progress),
               unit="step", dynamic_ncols=True)
    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        sampler.set_epoch(epoch)
        bar.set_description(f"epoch {epoch}/{cfg.epochs}")
        t0, tokens, loss_sum = time.perf_counter(), torch.zeros(1, dtype=torch.float64), 0.0
        for batch in train_loader:
            loss = train_step(ddp, batch, head, opt, sched, cfg, d, restricted, precision)
            loss_sum += loss
            tokens += batch["valid"].sum()
            bar.update()
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{sched.get_last_lr()[0]:.2e}")
        elapsed = time.perf_counter() - t0
        tokens = all_reduce_sum(tokens.to(d.device), d).item()
        history.append({"epoch": epoch, "train_loss": loss_sum / len(train_loader),
                        "train_tokens_per_s": tokens / elapsed, "epoch_seconds": elapsed,
                        "lr": sched.get_last_lr()[0], **evaluate(model, held_loader, head, cfg, d, restricted)})
        log(_format(history[-1]))
        if d.is_main:
            save_checkpoint(cfg.out, {
                "format": CHECKPOINT_FORMAT, "config": acfg.to_dict(), "exit_layer": exit_layer,
                "fingerprint": fingerprint, "base_arch": info.arch, "epoch": epoch, "history": history,
                "state_dict": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "fit_config": asdict(cfg), "draft_vocab": vocab})
    bar.close()
    return history


def _format(m: dict) -> str:
    train = f"train_loss {m['train_loss']:.4f}, {m['train_tokens_per_s']:.0f} tok/s, " if "train_loss" in m else ""
    return (f"epoch {m['epoch']}: {train}held-out loss {m['heldout_loss']:.4f}, kl {m['heldout_kl']:.4f}, "
            f"top-1 {m['top1_agreement']:.3f}, expected acceptance {m['expected_acceptance']:.3f}")


# ---------------------------------------------------------------- CLI

def setup_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kangaroo_edge.train.fit", description=__doc__.split("\n\n")[0])
    p.add_argument("--features", required=True, help="feature directory (meta.json + shards)")
    p.add_argument("-m", "--model", required=True, help="base model GGUF (LM head, hyperparameters)")
    p.add_argument("-o", "--out", required=True, help="checkpoint .pt (rewritten every epoch)")
    p.add_argument("--exit-layer", type=int, help="checked against the features' exit layer")
    p.add_argument("--lr", type=float, default=DEFAULT_LR)
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="windows per step and process")
    p.add_argument("--max-len", type=int, default=DEFAULT_MAX_LEN, help="positions per window")
    p.add_argument("--warmup-ratio", type=float, default=DEFAULT_WARMUP_RATIO)
    p.add_argument("--min-lr-ratio", type=float, default=DEFAULT_MIN_LR_RATIO)
    p.add_argument("--weight-decay", type=float, default=DEFAULT_WEIGHT_DECAY)
    p.add_argument("--grad-clip", type=float, default=DEFAULT_GRAD_CLIP)
    p.add_argument("--heldout-frac", type=float, default=DEFAULT_HELDOUT_FRAC)
    p.add_argument("--train-fraction", type=float, default=1.0,
                   help="train on this fraction of the training sequences, same held-out set (learning curves)")
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="positions per LM-head chunk")
    p.add_argument("--draft-vocab", type=int, default=DEFAULT_DRAFT_VOCAB, metavar="N",
                   help="the draft head: the N tokens the model most often predicts in the training data; the loss "
                        "over them + a pooled 'other' bucket, against the teacher's cached top-K (0: full vocabulary)")
    p.add_argument("--prompt-positions", action="store_true",
                   help="also train on the prompts' positions (teacher-forced text); held-out metrics stay on answers")
    p.add_argument("--init", choices=("layer", "random"), default="layer",
                   help="start from a base layer's attention weights, or random")
    p.add_argument("--init-layer", type=int, help="base layer for --init layer (default: the exit layer)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint at -o")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="the training step's matrix products (default: bfloat16 where the device has it natively)")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    a = setup_arg_parser().parse_args(argv)
    cfg = FitConfig(features=a.features, model=a.model, out=a.out, exit_layer=a.exit_layer, lr=a.lr,
                    epochs=a.epochs, batch_size=a.batch_size, max_len=a.max_len, warmup_ratio=a.warmup_ratio,
                    min_lr_ratio=a.min_lr_ratio, weight_decay=a.weight_decay, grad_clip=a.grad_clip,
                    heldout_frac=a.heldout_frac, train_fraction=a.train_fraction, chunk=a.chunk,
                    draft_vocab=a.draft_vocab, prompt_positions=a.prompt_positions, init=a.init, init_layer=a.init_layer,
                    seed=a.seed, resume=not a.fresh, device=a.device, precision=a.precision, num_workers=a.num_workers,
                    progress=not a.no_progress)
    try:
        fit(cfg)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
