"""`kangaroo-edge train`: train a Kangaroo adapter for a GGUF model (prompts -> responses -> features
-> fit -> adapter GGUF). Every stage is resumable; see docs/training.md."""

from __future__ import annotations

import argparse
import logging
import sys

from .common import UserError

STAGE_CHOICES = ("prompts", "responses", "features", "fit", "all")


def stage_list(text: str) -> tuple[str, ...]:
    """"all", one stage, or several joined by commas (prompts,responses,features)."""
    from ..train.pipeline import STAGES

    names = [s.strip() for s in text.split(",") if s.strip()]
    if names == ["all"]:
        return STAGES
    bad = [n for n in names if n not in STAGES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown stage {', '.join(bad) or text!r}; choose from "
                                         f"{', '.join(STAGE_CHOICES)} (several: comma-separated)")
    return tuple(names)


def setup_arg_parser(p: argparse.ArgumentParser) -> None:
    from ..train.pipeline import (DEFAULT_GAMMA, DEFAULT_N_CTX, DEFAULT_N_SEQ, DEFAULT_TAU, DRAFT_VOCAB_SIZE,
                                  BACKENDS, PRESETS)
    from ..batch import DEFAULT_TORCH_N_SEQ
    from ..train.precision import PRECISIONS

    p.add_argument("-m", "--model", default=None,
                   help="base GGUF model path or known name (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--exit-layer", type=int, required=True, help="N: the adapter reads the hidden state after layers [0, N)")
    p.add_argument("-o", "--out", default=None, help="adapter GGUF to write (default: WORKDIR/adapter.gguf)")
    p.add_argument("--stage", type=stage_list, default="all", metavar="STAGE",
                   help="prompts, responses, features, fit, or all (default); several: comma-separated")
    p.add_argument("--workdir", default=None, help="work directory (default: ./runs/<model stem>-exit<N>)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="default",
                   help="sizes: smoke (minutes, a pipeline check) or default (the full recipe)")
    g = p.add_argument_group("data (default: from the preset)")
    g.add_argument("--prompts", dest="prompts_file", default=None,
                   help="your prompts: JSONL (prompt / instruction / turns / messages) or text, one per line "
                        "(default: built-in prompts the model writes from topic x task seeds)")
    g.add_argument("--completion", action="store_true",
                   help="continue the prompts as raw text instead of answering them as chat turns (for a model "
                        "without a chat template, such as the pretrained Gemma 3 270M; with --prompts: the built-in prompts are chat requests)")
    g.add_argument("--n-prompts", type=int, default=None, help="number of prompts (a file: at most this many)")
    g.add_argument("-n", "--max-new-tokens", type=int, default=None, help="maximum tokens per response")
    g.add_argument("--sampled-fraction", type=float, default=None,
                   help="fraction of prompts that also get a sampled (temperature 0.7) response")
    g.add_argument("--exclude", default=None, metavar="FILE",
                   help="questions never to train on (a Spec-Bench JSONL with 'turns', or a prompt file): "
                        "prompts equal or near to one are dropped")
    g = p.add_argument_group("fit (default: from the preset)")
    g.add_argument("--epochs", type=int, default=None)
    g.add_argument("--lr", type=float, default=None)
    g.add_argument("--batch-size", type=int, default=None, help="windows per optimizer step")
    g.add_argument("--max-len", type=int, default=None, help="positions per training window")
    g.add_argument("--heldout-frac", type=float, default=None, help="fraction of sequences held out for metrics")
    g.add_argument("--fit-device", default=None, help="torch device: cpu, cuda, cuda:1 (default: cuda when available)")
    g.add_argument("--fit-precision", choices=PRECISIONS, default=None,
                   help="the fit's matrix products (default: bfloat16 where the device has it natively: a GPU, "
                        "a CPU with AMX or AVX-512 BF16; float32 elsewhere)")
    g.add_argument("--tau", type=float, default=DEFAULT_TAU, help=f"adapter's default confidence threshold (default {DEFAULT_TAU})")
    g.add_argument("--gamma", type=int, default=DEFAULT_GAMMA, help=f"adapter's default maximum drafts (default {DEFAULT_GAMMA})")
    g.add_argument("--draft-vocab", type=int, default=DRAFT_VOCAB_SIZE,
                   help="draft head size: the N tokens the model most often predicts in the training data (FR-Spec); "
                        "the fit's loss is over them plus one pooled 'other' bucket, against the model's cached top "
                        f"tokens; 0 drafts and trains over the whole vocabulary (default {DRAFT_VOCAB_SIZE})")
    g.add_argument("--prompt-positions", action="store_true",
                   help="also train on the prompts' positions (the prompt text teacher-forced, the paper's recipe)")
    g = p.add_argument_group("engine")
    g.add_argument("-c", "--ctx-size", type=int, default=DEFAULT_N_CTX,
                   help=f"context size; prompt + response are cut to it (default {DEFAULT_N_CTX})")
    g.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (default: physical cores)")
    g.add_argument("-np", "--parallel", type=int, default=None,
                   help=f"sequences generated at once by the prompts and responses stages (default {DEFAULT_N_SEQ}, "
                        f"the most the engine takes; {DEFAULT_TORCH_N_SEQ} with --responses-backend torch)")
    g.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto", help="engine compute device")
    g.add_argument("--responses-backend", choices=BACKENDS, default="engine",
                   help="who generates the answers: the engine (decoding's answers, exactly, whatever the batch) "
                        "or torch (bf16 matrix products on the fit's device, many sequences and whole prompts per "
                        "product: several times faster on CPUs with AMX or AVX-512 BF16 and on GPUs; the same "
                        "model rounded differently; llama, qwen2 and qwen3 models)")
    g.add_argument("--features-backend", choices=BACKENDS, default="engine",
                   help="who computes the features: the engine (the states decoding sees, exactly) or torch "
                        "(bf16 matrix products on the fit's device: several times faster on CPUs with AMX or "
                        "AVX-512 BF16 and on GPUs; llama, qwen2 and qwen3 models)")
    p.add_argument("-s", "--seed", type=int, default=0, help="seed for prompt writing, sampling and the fit (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace):
    from ..train.pipeline import TrainConfig

    for name in ("n_prompts", "max_new_tokens", "epochs", "batch_size", "max_len", "gamma", "ctx_size", "parallel"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    for name in ("sampled_fraction", "heldout_frac"):
        value = getattr(args, name)
        if value is not None and not 0.0 <= value <= 1.0:
            raise UserError(f"--{name.replace('_', '-')} must be in [0, 1], got {value}")
    if not 0.0 <= args.tau <= 1.0:
        raise UserError(f"--tau must be in [0, 1], got {args.tau}")
    if args.draft_vocab < 0:
        raise UserError(f"--draft-vocab must be >= 0, got {args.draft_vocab}")
    if args.lr is not None and args.lr <= 0:
        raise UserError(f"--lr must be > 0, got {args.lr}")
    return TrainConfig(exit_layer=args.exit_layer, model=args.model, out=args.out, workdir=args.workdir,
                       preset=args.preset, prompts_file=args.prompts_file, completion=args.completion,
                       n_prompts=args.n_prompts,
                       max_new_tokens=args.max_new_tokens, sampled_fraction=args.sampled_fraction,
                       epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, max_len=args.max_len,
                       heldout_frac=args.heldout_frac, tau=args.tau, gamma=args.gamma,
                       draft_vocab=args.draft_vocab, prompt_positions=args.prompt_positions, seed=args.seed,
                       n_ctx=args.ctx_size, n_seq=args.parallel, exclude=args.exclude, n_threads=args.threads,
                       device=args.device, responses_backend=args.responses_backend, features_backend=args.features_backend,
                       fit_device=args.fit_device, fit_precision=args.fit_precision, progress=not args.no_progress)


def main(args: argparse.Namespace) -> int:
    from ..train.pipeline import Pipeline

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    pipeline = Pipeline(config_from_args(args))
    reports = pipeline.run(args.stage)
    for stage, r in reports.items():
        print(f"{stage}: {summary(stage, r)}", file=sys.stderr)
    if "fit" in reports:
        print(pipeline.out)
    return 0


def summary(stage: str, r: dict) -> str:
    speed = f"{r['tokens_per_s']:.1f} tok/s" if r.get("tokens_per_s") else "nothing new to do"
    if stage == "prompts":
        return f"{r['n_prompts']} prompts ({r['duplicates']} duplicates removed), {speed}"
    if stage == "responses":
        return f"{r['n_responses']} responses ({r['n_new']} new), {speed}"
    if stage == "features":
        return f"{r['n_sequences']} sequences ({r['n_new']} new), {speed}"
    return (f"{r['epochs_done']} epochs run, held-out loss {r['heldout_loss']:.4f}, top-1 agreement "
            f"{r['top1_agreement']:.3f}, expected acceptance {r['expected_acceptance']:.3f}; {r['adapter']}")
