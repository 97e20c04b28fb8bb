"""Does the LLM read the image class by class? One training question, asked with its own image and six others.

    python scripts/image_sensitivity.py [--model DIR] [--config configs/train/shapeworld-small.yaml]

Prints P(<ins>) at every decision of the question's answer (columns, in answer order), one row per image (row 0 is
the question's own image). A model that reads the image per class changes single columns; one that only reads a
global "how full is the image" signal moves whole rows.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from lasagna.api import default_model_dir
from lasagna.checkpoint import load_pretrained
from lasagna.tokens import token_ids
from lasagna.train.config import load_train_config
from lasagna.train.setup import build_training_set


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--config", default="configs/train/shapeworld-small.yaml")
    args = ap.parse_args()
    model, tokenizer = load_pretrained(args.model or default_model_dir(), dtype=torch.float32)
    model.eval()
    dataset, collate = build_training_set(load_train_config(args.config), tokenizer, model.cfg)
    first = next(k for k in range(100) if "<semantic>" in dataset[k].conversations[0].question)
    sample = dataset[first]
    others = [dataset[j] for j in range(first + 40, first + 46)]
    batch = collate([sample] + [dataclasses.replace(sample, image=o.image) for o in others])
    with torch.no_grad():
        out = model(batch)
    ids = token_ids(tokenizer)
    labels = out.labels[0]
    decisions = ((labels == ids.ins) | (labels == ids.no_ins)).nonzero()[:, 0] - 1  # logits before each decision
    probs = out.logits[:, decisions].float().softmax(-1)
    p_ins = probs[..., ids.ins] / (probs[..., ids.ins] + probs[..., ids.no_ins])
    print(sample.conversations[0].answer)
    print(np.round(p_ins.numpy(), 2))


if __name__ == "__main__":
    main()
