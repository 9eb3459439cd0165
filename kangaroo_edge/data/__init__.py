"""Package data: the built-in training prompt seeds (prompt_seeds.json) and shipped adapters."""
