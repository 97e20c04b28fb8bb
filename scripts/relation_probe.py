"""Does the LLM hold whether a relation is true where it decides? A linear probe on its hidden states says.

    python scripts/relation_probe.py [--model DIR] [--train 1500] [--test 600] [--config FILE]

ShapeWorld referring items are drawn as training draws them (echo answers, a no-target share of 0.35 so that false
relations are common): `--train` items from `train`, `--test` from `test`. At every answer slot whose question holds a
relation ("left of", "above", ...), the hidden state of the position that predicts `<ins>` or `<no_ins>` is read after
each LLM layer (0: the input embedding). A logistic regression per layer, fitted on the `train` states, tells false
relations from true ones; its AUC on the `test` states is printed beside the AUC of the model's own P(`<no_ins>`). A
probe well above the model says the LLM knows more than it answers; a probe at the model's level says no linear
read-out of its states holds the answer (model doc, step 28).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from lasagna.api import default_model_dir
from lasagna.checkpoint import load_pretrained
from lasagna.data.collate import Collator
from lasagna.data.mixture import Mixture
from lasagna.data.shapeworld import holds_relation
from lasagna.tokens import token_ids
from lasagna.train.config import load_train_config
from lasagna.train.setup import training_sources

OVERRIDES = ["data.refer_no_target_rate=0.35", "data.mixture.task_weights={referring: 1.0}"]


@torch.no_grad()
def states(model, tokenizer, cfg, split: str, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> ((layers + 1, n, hidden) states, (n,) 1 for `<no_ins>`, (n,) the model's P(`<no_ins>`)) at relation slots."""
    mixture = Mixture(training_sources(cfg, split), cfg.data.mixture, seed=seed, length=count)
    collate, ids = Collator(tokenizer, model.cfg), token_ids(tokenizer)
    decisions = torch.tensor([ids.ins, ids.no_ins])
    found, labels, probs = [], [], []
    for start in range(0, count, 16):
        items = [mixture[i] for i in range(start, min(count, start + 16))]
        questions = [c.question for item in items for c in item.conversations]  # one row per conversation
        inputs = collate(items)
        expanded = model.expand(inputs, model.encode_images(inputs.clip_pixels, inputs.sam_pixels))
        out = model.llm.get_decoder()(
            inputs_embeds=expanded.embeds,
            attention_mask=expanded.attention_mask,
            use_cache=False,
            output_hidden_states=True,
        )
        nxt = expanded.labels[:, 1:]
        slot = torch.zeros_like(expanded.labels, dtype=torch.bool)
        slot[:, :-1] = torch.isin(nxt, decisions)
        for row, pos in slot.nonzero().tolist():
            if not holds_relation(questions[row]):
                continue
            found.append(torch.stack([h[row, pos] for h in out.hidden_states]).float())
            labels.append(int(nxt[row, pos] == ids.no_ins))
            logits = model.llm.get_output_embeddings()(out.last_hidden_state[row, pos])[decisions]
            probs.append(float(logits.float().softmax(-1)[1]))
    if not 0 < sum(labels) < len(labels):
        raise ValueError(f"{count} {split} items: {len(labels)} relation slots, {sum(labels)} false; need both kinds")
    return torch.stack(found, dim=1), torch.tensor(labels), torch.tensor(probs)


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """P(a false relation scores above a true one); ties count as not above (continuous scores hardly tie)."""
    return float((scores[labels == 1][:, None] > scores[labels == 0][None]).float().mean())


def fit_probe(x: torch.Tensor, y: torch.Tensor, l2: float = 1e-2):
    """A logistic regression on standardised features (L-BFGS, L2) -> its scoring function."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200)

    def closure():
        opt.zero_grad()
        z = (x - mean) / std @ w + b
        loss = F.binary_cross_entropy_with_logits(z, y.float()) + l2 * w.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return lambda v: ((v - mean) / std @ w + b).detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a checkpoint folder of ours (default: the embedded model)")
    parser.add_argument("--train", type=int, default=1500, help="referring items from `train` to fit on")
    parser.add_argument("--test", type=int, default=600, help="referring items from `test` to score on")
    parser.add_argument("--config", default="configs/train/shapeworld-small.yaml", help="the training config drawn as")
    args = parser.parse_args()
    cfg = load_train_config(args.config, OVERRIDES)
    model, tokenizer = load_pretrained(args.model or default_model_dir())
    model.float()
    x_train, y_train, _ = states(model, tokenizer, cfg, "train", args.train, seed=7)
    x_test, y_test, own = states(model, tokenizer, cfg, "test", args.test, seed=3)
    for name, y in (("train", y_train), ("test", y_test)):
        print(f"{name}: {len(y)} relation slots, {int(y.sum())} of them false")
    print(f"the model's own P(<no_ins>): AUC {auc(own, y_test):.3f}")
    for layer in range(x_train.shape[0]):
        probe = fit_probe(x_train[layer], y_train)
        print(
            f"probe after layer {layer}: AUC train {auc(probe(x_train[layer]), y_train):.3f}, "
            f"test {auc(probe(x_test[layer]), y_test):.3f}"
        )


if __name__ == "__main__":
    main()
