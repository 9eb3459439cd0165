"""Converters to GGUF: Hugging Face checkpoints (`hf_to_gguf`) and Kangaroo adapters."""
