"""Weight memory of a model preset for each precision, from its real shapes (built on the meta device: no memory, no
init), part by part, parameters and buffers.

    python benchmarks/memory.py [--preset lasagna-7b] [--official-keys official_lasagna_7b_keys.json]

fp32 / bf16 / fp16: every tensor in that dtype. 8bit / 4bit (`--quantize`): the LLM's linear layers as bitsandbytes
stores them (`lasagna.quantize.quantized_bytes`: int8 + one fp32 scale per row; NF4 packed two per byte + one fp32
absmax per 64 weights), everything else (vision tower, projectors, SAM, the LLM's embeddings, norms and output
layer) in bf16. Weights only: activations, the KV cache and the CUDA context come on top (benchmarks/gpu_check.sh
measures the peak). `--official-keys` also checks the preset's shapes against the released checkpoint's key list.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn

from lasagna.config import MODEL_PRESETS, preset
from lasagna.model.lasagna import LasagnaModel
from lasagna.quantize import quantized_bytes

SETTINGS = ("fp32", "bf16", "fp16", "8bit", "4bit")
FLOAT_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "8bit": 2, "4bit": 2}
"""Bytes per element of every floating tensor not quantized (the rest of a quantized model is bf16)."""
GIB = 1024**3


def parts(model: LasagnaModel) -> dict[str, list[nn.Module]]:
    """The table's rows: each architectural box, the LLM split into what quantization replaces and what it keeps."""
    llm = model.llm
    layers = llm.get_decoder().layers
    kept = list(llm.children())
    return {
        "vision tower (CLIP)": [model.vision_tower],
        "projectors": [m for m in (model.projector, model.text_projector, model.image_grid) if m is not None],
        "LLM decoder layers": [layers],
        "LLM embeddings, norm, head": [m for m in kept if m is not llm.get_decoder()]
        + [m for name, m in llm.get_decoder().named_children() if name != "layers"],
        "SAM image encoder": [model.sam.image_encoder],
        "SAM prompt encoder + mask decoder": [m for name, m in model.sam.named_children() if name != "image_encoder"],
    }


def tensor_bytes(modules: list[nn.Module], setting: str, quantized: set[int]) -> tuple[int, int, int]:
    """(parameter elements, buffer elements, bytes) under `modules` for `setting`; `quantized` holds the ids of the
    linear layers that 8bit / 4bit replace."""
    params = buffers = size = 0
    seen: set[int] = set()
    for root in modules:
        for module in root.modules():
            if id(module) in seen:
                continue
            seen.add(id(module))
            own = list(module.parameters(recurse=False))
            params += sum(p.numel() for p in own)
            for b in module.buffers(recurse=False):
                buffers += b.numel()
                size += b.numel() * (FLOAT_BYTES[setting] if b.is_floating_point() else b.element_size())
            if setting in ("8bit", "4bit") and id(module) in quantized:
                size += quantized_bytes(module.out_features, module.in_features, setting)
                own = [] if module.bias is None else [module.bias]
            size += sum(p.numel() * FLOAT_BYTES[setting] for p in own)
    return params, buffers, size


def table(name: str) -> str:
    """The markdown table of `preset(name)`."""
    with torch.device("meta"):
        model = LasagnaModel(preset(name))
    head = model.llm.get_output_embeddings()
    quantized = {id(m) for m in model.llm.modules() if type(m) is nn.Linear and m is not head}
    rows = [
        "| part | parameters | buffers | " + " | ".join(SETTINGS) + " |",
        "|---|---:|---:|" + "---:|" * len(SETTINGS),
    ]
    totals = dict.fromkeys(SETTINGS, 0)
    params = buffers = 0
    for part, modules in parts(model).items():
        sizes = {s: tensor_bytes(modules, s, quantized) for s in SETTINGS}
        p, b, _ = sizes["fp32"]
        params, buffers = params + p, buffers + b
        for s in SETTINGS:
            totals[s] += sizes[s][2]
        cells = " | ".join(f"{sizes[s][2] / GIB:.2f}" for s in SETTINGS)
        rows.append(f"| {part} | {p / 1e6:,.1f} M | {b:,} | {cells} |")
    if (params, buffers) != tensor_bytes([model], "fp32", quantized)[:2]:  # every tensor in exactly one row
        raise RuntimeError("the parts do not cover the model exactly once: a part is missing or counted twice")
    cells = " | ".join(f"**{totals[s] / GIB:.2f}**" for s in SETTINGS)
    rows.append(f"| **total** | **{params / 1e9:.2f} B** | **{buffers:,}** | {cells} |")
    return "\n".join(rows)


def check_keys(name: str, path: Path) -> str:
    """The released checkpoint's key list (name -> shape) against the preset's shapes."""
    from lasagna.convert.official import check_official_keys, key_report_line

    official = json.loads(path.read_text())
    official = {k: v["shape"] if isinstance(v, dict) else v for k, v in official.items()}
    return key_report_line(official, check_official_keys(official, preset(name)))


def main() -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--preset", default="lasagna-7b", choices=sorted(MODEL_PRESETS))
    ap.add_argument("--official-keys", type=Path, help="the released checkpoint's key list (JSON name -> shape)")
    args = ap.parse_args()
    print(f"weights of preset {args.preset!r} in GiB (parameters and buffers; 8bit/4bit: the LLM's linear layers")
    print("quantized by bitsandbytes, the rest in bf16)\n")
    print(table(args.preset))
    if args.official_keys:
        print("\n" + check_keys(args.preset, args.official_keys))


if __name__ == "__main__":
    main()
