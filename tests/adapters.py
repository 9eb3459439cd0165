"""Kangaroo adapters for tests, written in the real adapter GGUF format: initialised from the
model's own attention block at the exit layer (drafts are sometimes right, so multi-token
acceptance is exercised) or random (drafts are almost always wrong)."""

from kangaroo_edge.train.init_adapter import adapter_meta_for, write_initial_adapter

make_adapter = write_initial_adapter


def adapter_meta(lm, exit_layer: int, **kw):
    return adapter_meta_for(lm.hparams, exit_layer, **kw)
