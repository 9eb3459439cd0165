"""`kangaroo-edge convert`: file conversions.

    kangaroo-edge convert hf MODEL_DIR -o model.gguf [--outtype f16|f32]
    kangaroo-edge convert adapter adapter.pt -m base.gguf -o adapter.gguf [--tau 0.6 --gamma 6]
"""

from __future__ import annotations

import argparse
import sys


def setup_arg_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="convert_command", metavar="KIND")
    sub.required = True
    _setup_hf_parser(sub)
    _setup_adapter_parser(sub)


def _setup_hf_parser(sub: argparse._SubParsersAction) -> None:
    from ..convert.hf_to_gguf import DEFAULT_OUTTYPE, OUTTYPES

    hf = sub.add_parser("hf", help="Hugging Face safetensors checkpoint (llama, qwen2, qwen3, gemma3) -> GGUF",
                        description="Convert a Hugging Face safetensors checkpoint (llama incl. Llama 3, qwen2, qwen3, "
                                    "gemma3) to GGUF.")
    hf.add_argument("model_dir", help="directory with config.json, *.safetensors and tokenizer files")
    hf.add_argument("-o", "--out", required=True, help="GGUF file to write")
    hf.add_argument("--outtype", choices=sorted(OUTTYPES), default=DEFAULT_OUTTYPE,
                    help=f"type of the 2-D tensors (default {DEFAULT_OUTTYPE})")
    hf.add_argument("--name", default=None, help="general.name (default: the directory name)")
    hf.add_argument("--pre", default=None, help="override the detected llama.cpp pre-tokenizer name")


def _setup_adapter_parser(sub: argparse._SubParsersAction) -> None:
    from ..convert.adapter_gguf import DEFAULT_GAMMA, DEFAULT_TAU

    ad = sub.add_parser("adapter", help="adapter training checkpoint (.pt) -> adapter GGUF",
                        description="Convert a Kangaroo adapter checkpoint written by the fit stage to GGUF.")
    ad.add_argument("checkpoint", help="checkpoint .pt written by `kangaroo-edge train` / kangaroo_edge.train.fit")
    ad.add_argument("-m", "--model", required=True, help="the base model GGUF (metadata)")
    ad.add_argument("-o", "--out", required=True, help="adapter GGUF to write")
    ad.add_argument("--fingerprint", default=None, help="base model fingerprint (default: the checkpoint's)")
    ad.add_argument("--tau", type=float, default=DEFAULT_TAU, help=f"default confidence threshold (default {DEFAULT_TAU})")
    ad.add_argument("--gamma", type=int, default=DEFAULT_GAMMA, help=f"default maximum drafts (default {DEFAULT_GAMMA})")
    ad.add_argument("--outtype", choices=("f16", "f32"), default="f16", help="type of the projections (default f16)")
    ad.add_argument("--name", default=None, help="general.name")


def main(args: argparse.Namespace) -> int:
    if args.convert_command == "hf":
        from ..convert.hf_to_gguf import convert

        out = convert(args.model_dir, args.out, args.outtype, args.name, args.pre)
        print(f"wrote {out}", file=sys.stderr)
        return 0
    from ..train.export import checkpoint_to_gguf

    # tau and gamma are checked against the engine's limits where the file is written
    meta = checkpoint_to_gguf(args.checkpoint, args.model, args.out, args.fingerprint, args.tau, args.gamma,
                              args.outtype, args.name)
    print(f"wrote {args.out}: exit layer {meta.exit_layer}, base {meta.base_arch} {meta.fingerprint}", file=sys.stderr)
    return 0
