"""Where does each class name in the answer look in the image? Attention of the LLM's name tokens to image tokens.

    python scripts/name_attention.py [--model DIR] [--split test] [--n 12]

Each scene is asked about the six stuff classes, up to three present and three absent colour-shape classes, in a
shuffled list, with the template answer (every class followed by `<ins>`, as template decoding scores it). For the
answer's name token of each class (the token before its `<ins>`, whose next-token logits decide `<ins>` or
`<no_ins>`), the script prints per layer and head the attention mass on all image tokens (`img`) and on the
patches that class covers (`own`: each patch's attention times the share of its pixels that class labels). A head
that finds a class in the image puts most of its image mass on `own` when the class is present. Eager attention
is switched on for this, so it runs on one thread in a minute.
"""

from __future__ import annotations

import argparse
import random

import numpy as np
import torch

from lasagna.api import Lasagna
from lasagna.data import templates
from lasagna.data.records import IGNORE_LABEL
from lasagna.infer.engine import semantic_question
from lasagna.model.mllm import expand_images
from lasagna.shapeworld import STUFF, ShapeWorldSemantic
from lasagna.tokens import IMAGE_TOKEN_ID


def name_attention(engine, image: np.ndarray, label: np.ndarray, classes: list[str], asked: list[str]):
    """-> per asked class: (layers, heads, 2) attention mass of its answer name token on (own patches, image)."""
    model = engine.model
    question = semantic_question(asked)
    answer = "".join(templates.PRESENT_ITEM.format(name=c) for c in asked)
    ids = engine._encode(engine._render([(question, answer)]))
    enc, _, _ = engine.encode_image(image)
    ids_t = torch.tensor([ids])
    expanded = expand_images(model.embed_tokens, ids_t, torch.ones_like(ids_t), enc.llm_feats, model.pad_id)
    with torch.no_grad():
        out = model.llm.get_decoder()(
            inputs_embeds=expanded.embeds, attention_mask=expanded.attention_mask, output_attentions=True
        )
    att = torch.stack([a[0].float() for a in out.attentions])  # (layers, heads, L, L)
    start, count = ids.index(IMAGE_TOKEN_ID), enc.llm_feats.shape[1]
    has_cls = not model.cfg.vision.drop_cls
    side = round((count - has_cls) ** 0.5)
    cell = label.shape[0] // side
    ins_at = [p for p, t in enumerate(expanded.input_ids[0].tolist()) if t == engine.ids.ins]
    result = {}
    for name, at in zip(asked, ins_at, strict=True):
        share = (label == classes.index(name)).reshape(side, cell, side, cell).mean((1, 3)).reshape(-1)
        to_image = att[:, :, at - 1, start : start + count]
        own = (to_image[..., int(has_cls) :] * torch.from_numpy(share).float()).sum(-1)
        result[name] = torch.stack([own, to_image.sum(-1)], -1)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=12)
    args = ap.parse_args()
    torch.set_num_threads(1)
    api = Lasagna.from_pretrained(args.model)
    api.engine.model.llm.config._attn_implementation = "eager"  # why: sdpa returns no attention weights
    source = ShapeWorldSemantic(args.split)
    groups: dict[tuple[str, bool], list[torch.Tensor]] = {}
    for i in range(args.n):
        record = source[i]
        classes, label = list(record.classes), record.load_label()
        present = {classes[k] for k in np.unique(label) if k != IGNORE_LABEL}
        shapes = [c for c in classes if c not in STUFF]
        asked = list(STUFF) + [c for c in shapes if c in present][:3] + [c for c in shapes if c not in present][:3]
        random.Random(i).shuffle(asked)
        for name, mass in name_attention(api.engine, record.load_image(), label, classes, asked).items():
            groups.setdefault(("stuff" if name in STUFF else "colour-shape", name in present), []).append(mass)
    for (group, present), masses in sorted(groups.items()):
        mean = torch.stack(masses).mean(0)
        print(f"{group}, {'present' if present else 'absent'} (n={len(masses)}): per head, own / img")
        for layer, heads in enumerate(mean.tolist()):
            print(f"  layer {layer}: " + "  ".join(f"{own:.3f}/{img:.2f}" for own, img in heads))


if __name__ == "__main__":
    main()
