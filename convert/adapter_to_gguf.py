#!/usr/bin/env python3
"""Convert a trained Kangaroo adapter checkpoint to an adapter GGUF (docs/formats.md).

    python convert/adapter_to_gguf.py adapter.pt -m base.gguf -o adapter.gguf --tau 0.6 --gamma 6

The same as `kangaroo-edge convert adapter ...`, whose parser this uses.
"""

import sys

from kangaroo_edge.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["convert", "adapter", *sys.argv[1:]]))
