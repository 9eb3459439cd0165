"""The responses stage's second backend: many answers at once from the base model in torch
(torch_teacher's weights and products: bfloat16 where the device has it natively), with a KV cache
per sequence.

Why a second decoding loop: the engine's many-sequence step tops out at 1.6-1.9x one sequence
(its products keep ggml's one-row arithmetic, docs/training.md "Fast data") and its prefill at one
row-step per prompt token, while torch multiplies 64 rows, or a whole prompt, on the matrix units
of the CPU (AMX, AVX-512 BF16) or on a GPU: several times the engine's answers per second on such
hardware (docs/training.md). The answers are the same model's with its weights dequantized and
its products rounded differently, so a greedy answer follows the engine's until a near tie flips
(torch_teacher measures how close the two are); the adapter learns from the teacher's
distribution at every position, which the features stage computes over whichever text. The
engine stays the default and the exact path: its answers do not depend on the batch, these can
(a product's rounding may depend on how many rows it has).

Continuous batching: the active sequences hold slots [0, n_active) of one KV cache
[n_layer, n_seq, n_head_kv, n_ctx_seq, head_dim]; a sequence that ends gives its slot to the last
active one (one copy of its cells), so every step reads a prefix of the slots. New jobs are
prefilled together (sorted by length, right-padded: a causal prompt never sees the padding after
it) whenever a quarter of the slots is free, or nothing runs.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Iterator, Optional

import torch
import torch.nn.functional as F

from ..batch import DEFAULT_TORCH_N_SEQ, GenJob, GenResult
from ..types import SamplingParams
from .adapter_model import attention_scale, project_qkv
from .base_model import load_lm_head
from .torch_teacher import TorchTeacher

if TYPE_CHECKING:
    from ..llm import KangarooLM

PREFILL_TOKENS = 8192      # padded prompt tokens prefilled in one forward pass (bounds its activations)
CHUNK = 128                # KV cells per chunk of the cache (see TorchGenerator.__init__)
SORT_WINDOW = 4            # jobs are taken in windows of this many batches, sorted by prompt length
# the sampling a torch answer can use: the responses stage's temperature and top-p, with a seed
_SUPPORTED_SAMPLING = ("temperature", "top_p", "seed")


@dataclass
class _Sequence:
    job: GenJob
    n_cells: int                  # KV cells written (the prompt, then every output token fed back)
    started: float
    output: list[int] = field(default_factory=list)
    rng: Optional[torch.Generator] = None   # a sampled job's, seeded by its SamplingParams.seed


class TorchGenerator:
    """Decodes jobs `n_seq` at a time with the base model of `lm` in torch; `lm` (the engine)
    tokenizes, detokenizes and says which tokens end a generation. `generate` has the interface of
    batch.BatchedGenerator: results as each job ends, greedy or sampled (temperature, top-p)."""

    def __init__(self, lm: KangarooLM, n_seq: int = DEFAULT_TORCH_N_SEQ, n_ctx_seq: Optional[int] = None,
                 device: str = "cpu", dtype: Optional[torch.dtype] = None):
        if not isinstance(n_seq, int) or n_seq < 1:
            raise ValueError(f"n_seq must be a positive integer, got {n_seq!r}")
        self.lm, self.n_seq, self.n_ctx_seq = lm, n_seq, n_ctx_seq or lm.n_ctx
        self.model = TorchTeacher(lm.model_path, dtype, device)
        self.cfg, self.device = self.model.cfg, self.model.device
        self.dtype = self.model.layers[0].attn_q.weight.dtype  # the products' (and the cache's) dtype
        self.head = load_lm_head(lm.model_path).to(self.device, self.dtype)
        self.eog = {t for t in range(lm.n_vocab) if lm.engine.is_eog(t)}
        # the cache in chunks of CHUNK cells: chunk j of every (slot, kv head) row is one contiguous
        # [n_seq * n_head_kv, CHUNK, head_dim] block, so a step's attention multiplies a prefix of
        # it per chunk (torch's batched products copy strided operands, which cost more than the products)
        n_chunks = -(-self.n_ctx_seq // CHUNK)
        shape = (len(self.model.layers), n_chunks, n_seq * self.cfg.n_head_kv, CHUNK, self.cfg.head_dim)
        self.k = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self.v = torch.zeros(shape, dtype=self.dtype, device=self.device)

    def close(self) -> None:
        self.k = self.v = None

    def __enter__(self) -> TorchGenerator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def check(self, job: GenJob) -> None:
        """A clear error for a job this generator cannot run (before any work starts)."""
        if not job.prompt_ids:
            raise ValueError(f"job {job.key}: empty prompt")
        if min(job.prompt_ids) < 0 or max(job.prompt_ids) >= self.lm.n_vocab:
            raise ValueError(f"job {job.key}: a prompt token is outside the vocabulary (0..{self.lm.n_vocab - 1})")
        if not isinstance(job.max_new_tokens, int) or job.max_new_tokens < 1:
            raise ValueError(f"job {job.key}: max_new_tokens must be a positive integer, got {job.max_new_tokens!r}")
        if len(job.prompt_ids) + job.max_new_tokens > self.n_ctx_seq:
            raise ValueError(f"job {job.key}: {len(job.prompt_ids)} prompt tokens + {job.max_new_tokens} new "
                             f"exceed the {self.n_ctx_seq} cells of a sequence")
        if job.stop:
            raise ValueError(f"job {job.key}: the torch generator has no stop strings; use the engine's")
        default = SamplingParams()
        unsupported = [name for name in SamplingParams.__dataclass_fields__
                       if name not in _SUPPORTED_SAMPLING and getattr(job.sampling, name) != getattr(default, name)]
        if unsupported:
            raise ValueError(f"job {job.key}: the torch generator samples with temperature and top-p only, "
                             f"not {', '.join(unsupported)}; use the engine's generator")

    @torch.inference_mode()
    def generate(self, jobs: Iterable[GenJob]) -> Iterator[GenResult]:
        jobs = list(jobs)
        for job in jobs:
            self.check(job)
        # in windows of a few batches, the shortest prompts first: sequences running side by side
        # then have similar lengths, and a step's attention reads fewer cells that another row masks
        window = SORT_WINDOW * self.n_seq
        queue = deque(j for w in range(0, len(jobs), window)
                      for j in sorted(jobs[w:w + window], key=lambda j: len(j.prompt_ids)))
        active: list[_Sequence] = []
        while queue or active:
            free = self.n_seq - len(active)
            if queue and (free >= max(1, self.n_seq // 4) or not active):
                joining = [queue.popleft() for _ in range(min(free, len(queue)))]
                yield from self._join(joining, active)
            if active:
                yield from self._step(active)

    # ---- prefill

    def _join(self, jobs: list[GenJob], active: list[_Sequence]) -> Iterator[GenResult]:
        """Prefills `jobs` into the next free slots, in groups of similar length, and chooses each
        one's first token."""
        jobs = sorted(jobs, key=lambda j: len(j.prompt_ids))
        while jobs:
            n = 1
            while n < len(jobs) and (n + 1) * len(jobs[n].prompt_ids) <= PREFILL_TOKENS:
                n += 1
            group, jobs = jobs[:n], jobs[n:]
            first = len(active)
            logits = self._prefill(list(range(first, first + len(group))), [j.prompt_ids for j in group])
            seqs = [_Sequence(j, len(j.prompt_ids), time.perf_counter(), rng=self._rng(j.sampling)) for j in group]
            active.extend(seqs)
            yield from self._advance(active, first, logits)

    def _prefill(self, slots: list[int], prompts: list[tuple[int, ...]]) -> torch.Tensor:
        """Runs the prompts (right-padded) through every layer, writing their keys and values into
        `slots`; returns the logits at each prompt's last position, [len(prompts), n_vocab]."""
        m, cfg = self.model, self.cfg
        lengths = [len(p) for p in prompts]
        T = max(lengths)
        ids = torch.zeros(len(prompts), T, dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, :len(p)] = torch.tensor(p)
        ids, rows = ids.to(self.device), self._rows(torch.tensor(slots, device=self.device))
        n_chunks = -(-T // CHUNK)
        x = m.embed(ids)                                                       # [G, T, n_embd]
        ropes = m.rope(torch.arange(T, device=self.device)[None])
        window = m.window_mask(T)   # a causal prompt never sees the padding after it, windowed or not
        group = cfg.n_head // cfg.n_head_kv
        for i, layer in enumerate(m.layers):
            q, k, v = project_qkv(layer, cfg, layer.attn_norm(x), *ropes[layer.local])
            k, v = k.to(self.dtype), v.to(self.dtype)
            self.k[i, :n_chunks, rows], self.v[i, :n_chunks, rows] = self._chunked(k), self._chunked(v)
            mask = window if layer.local else None
            o = F.scaled_dot_product_attention(q.to(self.dtype), k.repeat_interleave(group, dim=1),
                                               v.repeat_interleave(group, dim=1), attn_mask=mask,
                                               is_causal=mask is None, scale=attention_scale(cfg))
            x = x + layer.post_attn(layer.attn_output(o.transpose(1, 2).reshape(len(prompts), T, -1)))
            x = x + layer.ffn(x)
        last = x[torch.arange(len(prompts)), torch.tensor(lengths, device=self.device) - 1]
        return self._logits(last)

    def _rows(self, slots: torch.Tensor) -> torch.Tensor:
        """The cache rows of `slots`' kv heads, slot by slot."""
        return (slots[:, None] * self.cfg.n_head_kv + torch.arange(self.cfg.n_head_kv, device=slots.device)).flatten()

    @staticmethod
    def _chunked(x: torch.Tensor) -> torch.Tensor:
        """[G, Hkv, T, D] -> [n_chunks, G * Hkv, CHUNK, D], T padded to whole chunks."""
        G, H, T, D = x.shape
        x = F.pad(x, (0, 0, 0, -T % CHUNK))
        return x.reshape(G * H, -1, CHUNK, D).transpose(0, 1)

    # ---- one step of every active sequence

    def _step(self, active: list[_Sequence]) -> Iterator[GenResult]:
        m, cfg = self.model, self.cfg
        A = len(active)
        tokens = torch.tensor([s.output[-1] for s in active], device=self.device)
        pos = torch.tensor([s.n_cells for s in active], device=self.device)
        n = int(pos.max()) + 1
        x = m.embed(tokens)[:, None]                                           # [A, 1, n_embd]
        ropes = m.rope(pos[:, None])
        H, R, group = cfg.n_head_kv, A * cfg.n_head_kv, cfg.n_head // cfg.n_head_kv
        n_chunks = -(-n // CHUNK)
        # each row's own cells, its new one included; -inf for the rest of its chunks (and, in a
        # local layer, for the cells n_swa or more positions back)
        row_pos = pos.repeat_interleave(H)
        cells = torch.arange(n_chunks * CHUNK, device=self.device)
        hidden = cells[None] > row_pos[:, None]
        bias = torch.zeros(R, 1, n_chunks * CHUNK, device=self.device).masked_fill_(hidden[:, None], float("-inf"))
        if m.info.n_swa:
            local_bias = bias.masked_fill((cells[None] <= row_pos[:, None] - m.info.n_swa)[:, None], float("-inf"))
        chunk, offset, rows = row_pos // CHUNK, row_pos % CHUNK, torch.arange(R, device=self.device)
        scale = attention_scale(cfg)
        for i, layer in enumerate(m.layers):
            q, k, v = project_qkv(layer, cfg, layer.attn_norm(x), *ropes[layer.local])  # q [A, H, 1, D]
            self.k[i, chunk, rows, offset] = k.reshape(R, -1).to(self.dtype)
            self.v[i, chunk, rows, offset] = v.reshape(R, -1).to(self.dtype)
            # GQA without copies: kv head h reads query heads h*group .. h*group+group-1 as `group` rows
            q = q.reshape(R, group, cfg.head_dim).to(self.dtype)
            keys, values = self.k[i, :n_chunks, :R], self.v[i, :n_chunks, :R]
            scores = torch.cat([torch.bmm(q, keys[j].transpose(1, 2)) for j in range(n_chunks)], dim=-1)
            p = (scores.float() * scale + (local_bias if layer.local else bias)).softmax(-1).to(self.dtype)
            o = sum(torch.bmm(p[:, :, j * CHUNK:(j + 1) * CHUNK], values[j]).float() for j in range(n_chunks))
            x = x + layer.post_attn(layer.attn_output(o.reshape(A, 1, -1)))
            x = x + layer.ffn(x)
        for s in active:
            s.n_cells += 1
        yield from self._advance(active, 0, self._logits(x[:, 0]))

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.model.output_norm(x).to(self.dtype), self.head).float()

    # ---- choosing tokens, ending sequences

    def _advance(self, active: list[_Sequence], first: int, logits: torch.Tensor) -> Iterator[GenResult]:
        """Gives active[first:] their next tokens (rows of `logits`), then ends the sequences that
        are done, moving the last active sequence into each freed slot."""
        seqs = active[first:]
        chosen = self._choose(logits, seqs)
        ended = []
        for slot, (s, token) in enumerate(zip(seqs, chosen), start=first):
            if token in self.eog:
                ended.append((slot, "stop"))
                continue
            s.output.append(token)
            if len(s.output) >= s.job.max_new_tokens:
                ended.append((slot, "length"))
        for slot, reason in sorted(ended, reverse=True):  # from the end: a moved sequence is never one that ends
            s = active[slot]
            last = len(active) - 1
            if slot != last:
                n_chunks, H = -(-active[last].n_cells // CHUNK), self.cfg.n_head_kv
                to, frm = slice(slot * H, (slot + 1) * H), slice(last * H, (last + 1) * H)
                self.k[:, :n_chunks, to], self.v[:, :n_chunks, to] = self.k[:, :n_chunks, frm], self.v[:, :n_chunks, frm]
                active[slot] = active[last]
            active.pop()
            yield GenResult(s.job.key, s.output, self.lm.detokenize(s.output), reason,
                            time.perf_counter() - s.started)

    def _choose(self, logits: torch.Tensor, seqs: list[_Sequence]) -> list[int]:
        """Greedy rows take the argmax; sampled rows sample in llama.cpp's order: top-p on the
        model's distribution, then the temperature on the tokens kept."""
        chosen = logits.argmax(-1).tolist()
        for i, s in enumerate(seqs):
            if s.rng is not None:
                chosen[i] = sample_top_p(logits[i], s.job.sampling, s.rng)
        return chosen

    @staticmethod
    def _rng(sampling: SamplingParams) -> Optional[torch.Generator]:
        if sampling.temperature <= 0:
            return None
        rng = torch.Generator()
        if sampling.seed is None:
            rng.seed()
        else:
            rng.manual_seed(sampling.seed)
        return rng


def sample_top_p(logits: torch.Tensor, sampling: SamplingParams, rng: torch.Generator) -> int:
    """One token from logits [n_vocab]: the most probable tokens whose probabilities reach top_p
    (at least one), then softmax(logits / temperature) over them."""
    sorted_logits, order = logits.sort(descending=True)
    if sampling.top_p < 1.0:
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        keep = int((cumulative < sampling.top_p).sum()) + 1   # up to and including the token that reaches top_p
        sorted_logits, order = sorted_logits[:keep], order[:keep]
    probs = (sorted_logits / sampling.temperature).softmax(-1)
    return int(order[torch.multinomial(probs.cpu(), 1, generator=rng)])
