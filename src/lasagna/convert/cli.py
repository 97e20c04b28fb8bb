"""`lasagna convert {official,lisa,sam,check-keys}`: released checkpoints -> our format."""

from __future__ import annotations

import argparse
from pathlib import Path

# Converters import torch and transformers; they load inside the handlers so `lasagna --help` stays fast.


def _official(args: argparse.Namespace) -> int:
    from .official import convert_official

    heads = {} if args.sam_decoder_heads is None else {"sam_decoder_heads": args.sam_decoder_heads}
    report = convert_official(args.src, args.out, clip=args.clip, dtype=args.dtype, overwrite=args.overwrite, **heads)
    print(
        f"wrote {report.out}: {report.tensors} tensors ({report.clip_tensors} from CLIP) as {args.dtype}; "
        f"skipped {len(report.skipped)} allowed leftovers"
    )
    return 0


def _lisa(args: argparse.Namespace) -> int:
    from .lisa import convert_lisa

    heads = {} if args.sam_decoder_heads is None else {"sam_decoder_heads": args.sam_decoder_heads}
    report = convert_lisa(args.src, args.out, clip=args.clip, dtype=args.dtype, overwrite=args.overwrite, **heads)
    print(
        f"wrote {report.out}: {report.tensors} tensors ({report.clip_tensors} from CLIP) as {args.dtype}; "
        f"skipped {len(report.skipped)} allowed leftovers"
    )
    print(f"  [SEG] (id {report.seg_id}) is now <ins>: `lasagna segment --query` gets one mask per [SEG]")
    for token, why in report.added.items():
        print(f"  added {token} as an untrained row: {why}")
    return 0


def _sam(args: argparse.Namespace) -> int:
    from .sam import convert_sam

    report = convert_sam(args.src, args.out, overwrite=args.overwrite)
    c = report.config
    print(
        f"wrote {report.out}: {report.tensors} tensors (SAM hidden {c.hidden_size}, depth {c.num_hidden_layers}, "
        f"global blocks {c.global_attn_indexes})"
    )
    return 0


def _check_keys(args: argparse.Namespace) -> int:
    from ..config import preset
    from .infer import read_json
    from .official import check_official_keys, key_report_line

    official = read_json(Path(args.official), "official key list")
    plan = check_official_keys(official, preset(args.preset))
    print(key_report_line(official, plan))
    if args.verbose:
        for line in plan.problems():
            print(f"  {line}")
    return 0 if plan.ok else 1


def register(subparsers) -> None:
    parser = subparsers.add_parser("convert", help="convert released checkpoints into lasagna checkpoints")
    sub = parser.add_subparsers(dest="convert_command", metavar="WHAT", required=True)

    p = sub.add_parser("official", help="a released LaSagnA-7B HF folder (+ CLIP) -> a lasagna folder")
    _release_arguments(p)
    p.set_defaults(func=_official)

    p = sub.add_parser("lisa", help="a released LISA HF folder ([SEG] token) + CLIP -> a lasagna folder (queries only)")
    _release_arguments(p)
    p.set_defaults(func=_lisa)

    p = sub.add_parser("sam", help="an original SAM checkpoint (.pth) -> our sam.* names in a .safetensors file")
    p.add_argument("--src", required=True, type=Path, help="e.g. sam_vit_h_4b8939.pth")
    p.add_argument("--out", required=True, type=Path, help="output .safetensors file")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_sam)

    p = sub.add_parser("check-keys", help="map an official key list (name -> shape JSON) onto a preset")
    p.add_argument("--official", required=True, type=Path, help="JSON object {name: shape}")
    p.add_argument("--preset", default="lasagna-7b", help="model preset to compare with (default: lasagna-7b)")
    p.add_argument("--verbose", action="store_true", help="list every problem key")
    p.set_defaults(func=_check_keys)


def _release_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of the two converters of released LLaVA-style folders (LaSagnA and LISA)."""
    p.add_argument("--src", required=True, type=Path, help="the released folder (config.json, weights, tokenizer)")
    p.add_argument("--clip", type=Path, help="a local openai/clip-vit-large-patch14 folder (not in the release)")
    p.add_argument("--out", required=True, type=Path, help="output checkpoint folder")
    p.add_argument(
        "--dtype", choices=["bf16", "fp16", "fp32"], default="bf16", help="weight dtype (default: bf16, as trained)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument(
        "--sam-decoder-heads",
        type=int,
        help="SAM mask-decoder heads, not recoverable from shapes (default: 8, as in every released SAM)",
    )
