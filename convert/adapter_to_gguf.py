#!/usr/bin/env python3
"""Convert a trained Kangaroo adapter checkpoint to an adapter GGUF (docs/formats.md).

    python convert/adapter_to_gguf.py adapter.pt -m base.gguf -o adapter.gguf --tau 0.6 --gamma 6

The logic lives in kangaroo_edge.convert.adapter_gguf so the installed wheel has it too.
"""

import sys

from kangaroo_edge.convert.adapter_gguf import main

if __name__ == "__main__":
    sys.exit(main())
