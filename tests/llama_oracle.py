"""llama.cpp itself (through llama-cpp-python) as the correctness oracle."""

from __future__ import annotations

import numpy as np
import llama_cpp


class LlamaOracle:
    def __init__(self, model_path, n_ctx: int, n_threads: int, logits_all: bool = False):
        self.llm = llama_cpp.Llama(str(model_path), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                                   logits_all=logits_all, verbose=False)
        self.n_vocab = self.llm.n_vocab()

    def last_logits(self) -> np.ndarray:
        ptr = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def greedy(self, prompt_ids: list[int], n_new: int, stop_at_eog: bool = True) -> list[int]:
        """Greedy continuation, one llama_decode per token, argmax as llama.cpp's greedy sampler."""
        self.llm.reset()
        self.llm.eval(prompt_ids)
        out: list[int] = []
        for _ in range(n_new):
            tok = int(np.argmax(self.last_logits()))
            if stop_at_eog and llama_cpp.llama_vocab_is_eog(self.llm._model.vocab, tok):
                break
            out.append(tok)
            self.llm.eval([tok])
        return out

    def all_logits(self, prompt_ids: list[int]) -> np.ndarray:
        """[n_tokens, n_vocab] logits at every position (needs logits_all=True)."""
        self.llm.reset()
        self.llm.eval(prompt_ids)
        return np.array(self.llm.scores[: len(prompt_ids)])
