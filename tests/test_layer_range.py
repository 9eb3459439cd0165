"""The layer-range graph: [0, a) then [a, L) over the hidden states equals [0, L) in one go."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.fast  # in the fast tier (pyproject.toml)


def test_split_at_every_quarter_gives_same_logits(any_model):
    e = any_model.engine
    ids = any_model.tokenize("The quick brown fox jumps over the lazy dog. " * 3)
    full = e.forward(ids, 0, e.n_layer, 0, "logits", True)
    for a in (1, e.n_layer // 4, e.n_layer // 2, e.n_layer - 1):
        hidden = e.forward(ids, 0, a, 0, "hidden", True)
        assert hidden.shape == (len(ids), e.n_embd)
        split = e.forward(hidden, a, e.n_layer, 0, "logits", True)
        np.testing.assert_array_equal(split, full)


def test_three_way_split_and_normed_output(smollm):
    e = smollm.engine
    ids = smollm.tokenize("Kangaroos hop.")
    h1 = e.forward(ids, 0, 2, 0, "hidden", True)
    h2 = e.forward(h1, 2, 17, 0, "hidden", True)
    normed = e.forward(h2, 17, e.n_layer, 0, "normed", True)
    logits = e.forward(h2, 17, e.n_layer, 0, "logits", True)
    full = e.forward(ids, 0, e.n_layer, 0, "logits", True)
    np.testing.assert_array_equal(logits, full)
    assert normed.shape == (len(ids), e.n_embd)


def test_last_output_only_equals_last_row(smollm):
    e = smollm.engine
    ids = smollm.tokenize("One two three four five")
    all_rows = e.forward(ids, 0, e.n_layer, 0, "logits", True)
    last = e.forward(ids, 0, e.n_layer, 0, "logits", False)
    np.testing.assert_allclose(last[0], all_rows[-1], atol=1e-4)
