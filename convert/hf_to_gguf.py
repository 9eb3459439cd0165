#!/usr/bin/env python3
"""Export a Hugging Face llama/qwen2 safetensors checkpoint to GGUF.

    python convert/hf_to_gguf.py path/to/hf_model -o model.gguf --outtype f16

The same as `kangaroo-edge convert hf ...`, whose parser this uses.
"""

import sys

from kangaroo_edge.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["convert", "hf", *sys.argv[1:]]))
