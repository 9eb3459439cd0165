#!/usr/bin/env python3
"""Export a Hugging Face llama/qwen2 safetensors checkpoint to GGUF.

    python convert/hf_to_gguf.py path/to/hf_model -o model.gguf --outtype f16

The logic lives in kangaroo_edge.convert.hf_to_gguf so the installed wheel has it too.
"""

import argparse
import logging

from kangaroo_edge.convert.hf_to_gguf import DEFAULT_OUTTYPE, OUTTYPES, convert


def setup_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "model_dir", help="directory with config.json, model.safetensors, tokenizer.json"
    )
    parser.add_argument("-o", "--outfile", required=True, help="output GGUF path")
    parser.add_argument("--outtype", choices=sorted(OUTTYPES), default=DEFAULT_OUTTYPE)
    parser.add_argument("--name", help="general.name (default: the directory name)")
    return parser


def main() -> None:
    args = setup_arg_parser().parse_args()
    logging.basicConfig(level=logging.INFO)
    out = convert(args.model_dir, args.outfile, outtype=args.outtype, name=args.name)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
