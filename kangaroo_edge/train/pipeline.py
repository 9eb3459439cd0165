"""`kangaroo-edge train`: prompts -> responses -> features -> fit (+ adapter GGUF), in a work directory.

    WORKDIR/
      run.json              model path, fingerprint, exit layer (a workdir serves one model)
      prompts.raw.jsonl     built-in prompts: every model attempt (resume log)
      prompts.jsonl         the training prompts            prompts.meta.json
      responses.jsonl       the model's answers (token ids)
      features/             exit-layer + final normed hidden states (feature_shards format)
      adapter.pt            fit checkpoint (rewritten every epoch)   adapter.metrics.json
      stages.json           what each stage did last, with its throughput

Every stage can run alone and skips work already done, so an interrupted run continues where it
stopped. The fit stage runs in this process; for several GPUs run the fit under torchrun instead
(docs/training.md).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

from ..batch import DEFAULT_N_SEQ, DEFAULT_TORCH_N_SEQ
from .draft_vocab import DEFAULT_SIZE as DRAFT_VOCAB_SIZE
from ..convert.adapter_gguf import DEFAULT_GAMMA, DEFAULT_TAU  # the engine's defaults
from .jsonl import write_json_atomic
from .prompts import run_prompts_stage

logger = logging.getLogger(__name__)

STAGES = ("prompts", "responses", "features", "fit")
BACKENDS = ("engine", "torch")  # who computes the responses and features stages: our engine, or torch
DEFAULT_N_CTX = 2048          # prompt + response are cut to this for features


@dataclass(frozen=True)
class Preset:
    n_prompts: int                 # built-in prompts
    n_prompts_file: Optional[int]  # prompts taken from a user's file (None: all)
    max_new_tokens: int
    sampled_fraction: float
    epochs: int
    lr: float
    batch_size: int
    max_len: int
    heldout_frac: float
    shard_tokens: int


PRESETS = {
    # Minutes on a laptop CPU: checks that everything fits together, not a useful adapter.
    "smoke": Preset(n_prompts=16, n_prompts_file=16, max_new_tokens=32, sampled_fraction=0.0, epochs=2, lr=3e-4, batch_size=4,
                    max_len=256, heldout_frac=0.25, shard_tokens=1 << 14),
    # The full recipe (docs/training.md): thousands of self-written prompts, greedy answers,
    # the paper's 10 epochs; lr from the sweep in docs/training.md (the paper's 3e-4 is for a
    # 7B model's 67M-parameter adapter and barely moves a small model's).
    # 25% of the prompts also get an answer sampled at temperature 0.7 (for sampling users).
    # Shards of 32k tokens: one every few minutes at this CPU's features rate.
    "default": Preset(n_prompts=4000, n_prompts_file=None, max_new_tokens=512, sampled_fraction=0.25, epochs=10, lr=1e-2, batch_size=8,
                      max_len=1024, heldout_frac=0.05, shard_tokens=1 << 15),
}


@dataclass
class TrainConfig:
    exit_layer: int
    model: Optional[str] = None           # GGUF path or known name; None: the default model
    out: Optional[str] = None             # adapter GGUF; default WORKDIR/adapter.gguf
    workdir: Optional[str] = None         # default ./runs/<model stem>-exit<N>
    preset: str = "default"
    prompts_file: Optional[str] = None    # a user's JSONL / text prompts; None: built-in prompts
    completion: bool = False              # prompts continued as raw text (a model without a chat template)
    # None: take the preset's value
    n_prompts: Optional[int] = None
    max_new_tokens: Optional[int] = None
    sampled_fraction: Optional[float] = None
    epochs: Optional[int] = None
    lr: Optional[float] = None
    batch_size: Optional[int] = None
    max_len: Optional[int] = None
    heldout_frac: Optional[float] = None
    shard_tokens: Optional[int] = None
    tau: float = DEFAULT_TAU
    gamma: int = DEFAULT_GAMMA
    draft_vocab: int = DRAFT_VOCAB_SIZE   # FR-Spec draft head rows, the fit's loss over them; 0: the full vocabulary
    prompt_positions: bool = False        # the fit trains on the prompts' positions too (teacher-forced text)
    seed: int = 0
    n_ctx: int = DEFAULT_N_CTX
    n_seq: Optional[int] = None           # sequences generated at once (None: the generator's default)
    exclude: Optional[str] = None         # file of questions never to train on (Spec-Bench JSONL)
    n_threads: Optional[int] = None
    device: str = "auto"                  # engine device
    responses_backend: str = "engine"     # "engine" (its exact answers) or "torch" (torch_generator: bf16, faster)
    features_backend: str = "engine"      # "engine" (its exact states) or "torch" (torch_teacher: bf16, faster)
    fit_device: Optional[str] = None      # torch device (default: cuda when available)
    fit_precision: Optional[str] = None   # the fit's products: precision.PRECISIONS (default: bf16 where native)
    progress: bool = True

    def resolved(self) -> TrainConfig:
        """A copy with every None option filled from the preset."""
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        for stage in ("responses", "features"):
            backend = getattr(self, f"{stage}_backend")
            if backend not in BACKENDS:
                raise ValueError(f"{stage} backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        preset = asdict(PRESETS[self.preset])
        if self.prompts_file:
            preset["n_prompts"] = preset["n_prompts_file"]
        del preset["n_prompts_file"]
        return replace(self, **{k: v for k, v in preset.items() if getattr(self, k) is None})


def default_workdir(model_path: Path, exit_layer: int) -> Path:
    return Path("runs") / f"{model_path.stem}-exit{exit_layer}"


class Pipeline:
    """Runs the stages for one TrainConfig; loads the model only when a stage needs it."""

    def __init__(self, cfg: TrainConfig, lm=None):
        from ..models import resolve_model

        self.cfg = cfg.resolved()
        self.model_path = Path(lm.model_path) if lm is not None else resolve_model(self.cfg.model)
        self.workdir = Path(self.cfg.workdir) if self.cfg.workdir else default_workdir(self.model_path, self.cfg.exit_layer)
        self.out = Path(self.cfg.out) if self.cfg.out else self.workdir / "adapter.gguf"
        self.checkpoint = self.workdir / "adapter.pt"
        self._lm = lm
        self._generator = None
        self.reports: dict[str, dict] = {}

    @property
    def lm(self):
        if self._lm is None:
            from ..llm import KangarooLM

            self._lm = KangarooLM(self.model_path, n_ctx=self.cfg.n_ctx, n_threads=self.cfg.n_threads,
                                  device=self.cfg.device)
        return self._lm

    # ---- bookkeeping

    def _check_run(self) -> None:
        """A work directory belongs to one model (by fingerprint) and holds features of one exit layer."""
        from .features import check_exit_layer

        check_exit_layer(self.lm.hparams, self.cfg.exit_layer)
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / "run.json"
        fp = self.lm.hparams.fingerprint
        if path.exists():
            run = json.loads(path.read_text())
            if run["fingerprint"] != fp:
                raise ValueError(f"{self.workdir} was made with model {run['model']} (fingerprint "
                                 f"{run['fingerprint']}), not {self.model_path} ({fp}); use another --workdir")
            if run["exit_layer"] != self.cfg.exit_layer and (self.workdir / "features").exists():
                raise ValueError(f"{self.workdir} holds features for exit layer {run['exit_layer']}, not "
                                 f"{self.cfg.exit_layer}; use another --workdir (prompts and responses can be "
                                 "copied over)")
        write_json_atomic(path, {"model": str(self.model_path), "fingerprint": fp, "exit_layer": self.cfg.exit_layer,
                                 "n_ctx": self.lm.n_ctx})
        self.fingerprint = fp

    def _record(self, stage: str, report) -> None:
        row = asdict(report)
        row["tokens_per_s"] = report.tokens_per_s
        self.reports[stage] = row
        path = self.workdir / "stages.json"
        stages = json.loads(path.read_text()) if path.exists() else {}
        if not getattr(report, "skipped", False):
            stages[stage] = row  # keep the numbers of the run that did the work
        write_json_atomic(path, stages)

    # ---- stages

    def run(self, stages=STAGES) -> dict[str, dict]:
        for stage in stages:
            if stage not in STAGES:
                raise ValueError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)} or all")
        if "prompts" in stages and self.cfg.completion and self.cfg.prompts_file is None:
            # the built-in prompts are the model's answers to chat requests
            raise ValueError("completion-style training needs a prompts file (--prompts FILE): the built-in "
                             "prompts are written by the model in a chat")
        self._check_run()
        logger.info("train: model %s, exit layer %d, workdir %s, preset %s", self.model_path, self.cfg.exit_layer,
                    self.workdir, self.cfg.preset)
        try:
            for stage in STAGES:
                if stage in stages:
                    getattr(self, f"run_{stage}")()
        finally:
            if self._generator is not None:
                self._generator.close()
                self._generator = None
        return self.reports

    def generator(self):
        """The engine's batched generator: the prompts stage's, and the responses stage's unless it
        runs in torch (loaded once). It multiplies at most DEFAULT_N_SEQ rows, so a larger -np meant
        for the torch responses stage is cut to that here."""
        if self._generator is None:
            from ..batch import BatchedGenerator

            n_seq = self.cfg.n_seq or DEFAULT_N_SEQ
            if self.cfg.responses_backend == "torch":
                n_seq = min(n_seq, DEFAULT_N_SEQ)
            self._generator = BatchedGenerator(self.lm, n_seq, self.lm.n_ctx)
        return self._generator

    def torch_generator(self):
        from .fit import torch_device
        from .torch_generator import TorchGenerator

        self._set_torch_threads()
        return TorchGenerator(self.lm, self.cfg.n_seq or DEFAULT_TORCH_N_SEQ, self.lm.n_ctx,
                              device=str(torch_device(self.cfg.fit_device)))

    def exclusions(self) -> list[str]:
        from .user_prompts import read_exclusions

        return read_exclusions(self.cfg.exclude) if self.cfg.exclude else []

    def run_prompts(self):
        from .builtin_prompts import batched_writer

        c = self.cfg
        write = batched_writer(self.lm, self.generator()) if c.prompts_file is None else None
        report = run_prompts_stage(self.workdir, c.n_prompts, c.prompts_file, seed=c.seed, progress=c.progress,
                                   write=write, exclude=self.exclusions())
        self._record("prompts", report)
        return report

    def run_responses(self):
        from .responses import run_responses_stage

        c = self.cfg
        if c.responses_backend == "torch":
            with self.torch_generator() as generator:
                report = run_responses_stage(self.lm, self.workdir, c.max_new_tokens, c.sampled_fraction, c.seed,
                                             c.progress, generator=generator, completion=c.completion)
        else:
            report = run_responses_stage(self.lm, self.workdir, c.max_new_tokens, c.sampled_fraction, c.seed,
                                         c.progress, generator=self.generator(), completion=c.completion)
        self._record("responses", report)
        return report

    def run_features(self):
        from .features import run_features_stage

        teacher = None
        if self.cfg.features_backend == "torch":
            from .fit import torch_device
            from .torch_teacher import TorchTeacher

            self._set_torch_threads()
            teacher = TorchTeacher(self.model_path, device=str(torch_device(self.cfg.fit_device)))
        report = run_features_stage(self.lm, self.workdir, self.cfg.exit_layer, self.cfg.shard_tokens,
                                    self.cfg.progress, teacher)
        self._record("features", report)
        return report

    def _set_torch_threads(self):
        if self.cfg.n_threads:  # torch's own default is every core, which -t promises not to take
            import torch

            torch.set_num_threads(self.cfg.n_threads)

    def run_fit(self):
        self._set_torch_threads()
        report = fit_and_export(self.fit_config(), self.out, self.fingerprint, self.cfg.tau, self.cfg.gamma)
        self._record("fit", report)
        return report

    def fit_config(self):
        from .fit import FitConfig

        c = self.cfg
        return FitConfig(features=str(self.workdir / "features"), model=str(self.model_path), out=str(self.checkpoint),
                         exit_layer=c.exit_layer, lr=c.lr, epochs=c.epochs, batch_size=c.batch_size,
                         max_len=c.max_len, heldout_frac=c.heldout_frac, seed=c.seed, device=c.fit_device,
                         precision=c.fit_precision,
                         draft_vocab=c.draft_vocab, prompt_positions=c.prompt_positions, progress=c.progress)


@dataclass
class FitReport:
    epochs_done: int          # by this run
    n_tokens: int             # training positions processed by this run (all epochs)
    seconds: float
    heldout_loss: Optional[float] = None
    top1_agreement: Optional[float] = None
    expected_acceptance: Optional[float] = None
    exported: bool = False
    adapter: str = ""
    metrics: str = ""

    @property
    def tokens_per_s(self) -> float:
        return self.n_tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def skipped(self) -> bool:
        return self.epochs_done == 0 and not self.exported


def fit_and_export(fit_cfg, out: Path, fingerprint: str, tau: float, gamma: int) -> FitReport:
    """Trains (or resumes, or skips a finished) checkpoint, then writes the adapter GGUF, with the
    fit's draft vocabulary as its draft head, unless an up-to-date one exists."""
    import time

    from .export import checkpoint_to_gguf
    from .feature_shards import FeatureShards
    from .fit import fit, load_checkpoint, metrics_path

    ckpt_path = Path(fit_cfg.out)
    done_epochs = load_checkpoint(ckpt_path)["epoch"] if ckpt_path.exists() else 0
    t0 = time.perf_counter()
    history = None
    if done_epochs < fit_cfg.epochs:
        _check_split(FeatureShards(fit_cfg.features), fit_cfg.heldout_frac, fit_cfg.seed)
        history = fit(fit_cfg)
    else:
        logger.info("fit: done already (%s has %d of %d epochs)", ckpt_path, done_epochs, fit_cfg.epochs)
    seconds = time.perf_counter() - t0
    ckpt = load_checkpoint(ckpt_path)
    if ckpt["fingerprint"] != fingerprint:
        raise ValueError(f"{ckpt_path}: the checkpoint's fingerprint {ckpt['fingerprint']} differs from the "
                         f"engine's {fingerprint}")
    history = ckpt["history"]
    new = [h for h in history if h["epoch"] > done_epochs]
    exported = False
    if not out.exists() or out.stat().st_mtime < ckpt_path.stat().st_mtime:
        out.parent.mkdir(parents=True, exist_ok=True)
        meta = checkpoint_to_gguf(ckpt_path, fit_cfg.model, out, fingerprint=fingerprint, tau=tau, gamma=gamma)
        exported = True
        logger.info("fit: wrote %s (exit layer %d, tau %.2f, gamma %d, base %s)", out, meta.exit_layer, tau, gamma,
                    meta.fingerprint)
    last = history[-1]
    n_tokens = sum(int(h["train_tokens_per_s"] * h["epoch_seconds"]) for h in new)
    return FitReport(len(new), n_tokens, seconds, last["heldout_loss"], last["top1_agreement"],
                     last["expected_acceptance"], exported, str(out), str(metrics_path(ckpt_path)))


def _check_split(shards, heldout_frac: float, seed: int) -> None:
    train, held = shards.split(heldout_frac, seed)
    if len(train) == 0 or len(held) == 0:
        raise ValueError(f"{len(shards)} training sequences split into {len(train)} for training and {len(held)} "
                         f"held out (--heldout-frac {heldout_frac}): use more prompts or another --heldout-frac")
