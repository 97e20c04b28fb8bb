"""Give a trained model's LLM more layers, on top of its own, so that a continuation can learn to use them.

    python tools/grow_llm.py --model DIR --out DIR --layers N [--seed 0]

Layers are added after the last one. Each new layer starts as its architecture would (drawn from `--seed`), except
its two output projections (attention's `o_proj` and the MLP's `down_proj`), which start at zero: the layer then adds
nothing to the residual stream, so the written model answers exactly as the one read, and training opens it up (the
projections get gradients at once; the rest of the layer after their first step). Every other tensor is copied as it
is, at its own dtype, and the new layers take the LLM's. Continue with `lasagna train ... init_from=OUT`. The new
layers are taken from a whole LLM of the grown size, built in float32: fine for small models, costly for a 7B one.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from lasagna.api import Lasagna
from lasagna.checkpoint import build_from_state, read_config, save_pretrained
from lasagna.model.lasagna import LasagnaModel, seeded
from lasagna.model.mllm import build_llm

ZERO_STARTED = ("self_attn.o_proj.weight", "mlp.down_proj.weight")
"""The projections through which a LLaMA layer writes to the residual stream."""


def grown_state(model: LasagnaModel, fresh: torch.nn.Module, old_layers: int) -> dict[str, torch.Tensor]:
    """`model`'s tensors plus the layers of `fresh` (an LLM) from `old_layers` on, their writing projections at zero."""
    dtype = next(model.llm.parameters()).dtype
    state = model.state_dict()
    prefix = "llm.model.layers."
    for name, value in fresh.state_dict().items():
        key = f"llm.{name}"
        if not key.startswith(prefix) or int(key[len(prefix) :].split(".")[0]) < old_layers:
            continue
        state[key] = torch.zeros_like(value, dtype=dtype) if key.endswith(ZERO_STARTED) else value.to(dtype)
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a checkpoint folder of ours")
    parser.add_argument("--out", type=Path, required=True, help="where the new folder goes (must not exist)")
    parser.add_argument("--layers", type=int, required=True, help="the LLM's layer count after growing")
    parser.add_argument("--seed", type=int, default=0, help="draws the new layers' starts")
    args = parser.parse_args(argv)
    cfg = read_config(args.model)
    if cfg.llm.arch != "llama":
        parser.error(f"only LLaMA layers can be grown, {args.model} has {cfg.llm.arch!r}")
    old = cfg.llm.num_hidden_layers
    if args.layers <= old:
        parser.error(f"--layers must exceed the {old} layers {args.model} has, got {args.layers}")
    cfg = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, num_hidden_layers=args.layers))
    with torch.no_grad():
        source = Lasagna.from_pretrained(args.model)  # its judges and vocabulary travel to the new folder
        model, tokenizer = source.model, source.tokenizer
        with seeded(args.seed, "llm"):  # the draws a model of the grown size built with this seed would start from
            fresh = build_llm(cfg.llm)
        grown = build_from_state(cfg, grown_state(model, fresh, old), str(args.model))
        grown.set_token_ids(model.ins_id, model.pad_id, model.no_ins_id)
        save_pretrained(grown, tokenizer, args.out, judges=source.judges, about=source.header)
    print(f"wrote {args.out}: {args.model} with {args.layers - old} LLM layers on its {old}, adding nothing yet")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
