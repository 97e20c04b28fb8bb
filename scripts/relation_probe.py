"""Does the LLM hold whether a relation is true where it decides? A linear probe on its hidden states says.

    python scripts/relation_probe.py [--model DIR] [--train 1500] [--test 600] [--config FILE] [--place]

ShapeWorld referring items are drawn as training draws them (echo answers, a no-target share of 0.35 so that false
relations are common): `--train` items from `train`, `--test` from `test`. At every answer slot whose question holds a
relation ("left of", "above", ...), the hidden state of the position that predicts `<ins>` or `<no_ins>` is read after
each LLM layer (0: the input embedding). A logistic regression per layer, fitted on the `train` states, tells false
relations from true ones; its AUC on the `test` states is printed beside the AUC of the model's own P(`<no_ins>`). A
probe well above the model says the LLM knows more than it answers; a probe at the model's level says no linear
read-out of its states holds the answer (model doc, step 28).

With `--place`, every slot with a target is read instead, and a ridge regression per layer predicts where the target
is (the centroid of its mask, x and y in [0, 1]); its R^2 on the `test` states is printed for each kind of expression
(relation, extreme, other). The state at a slot prompts the mask decoder; an R^2 near 0 says that state does not hold
where the target is (model doc, step 29).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from refer_kinds import EXTREME

from lasagna.api import default_model_dir
from lasagna.checkpoint import load_pretrained
from lasagna.data.collate import Collator
from lasagna.data.mixture import Mixture
from lasagna.shapeworld import holds_relation
from lasagna.tokens import INS, token_ids
from lasagna.train.config import load_train_config
from lasagna.train.setup import training_sources

OVERRIDES = ["data.refer_no_target_rate=0.35", "data.mixture.task_weights={referring: 1.0}"]


@torch.no_grad()
def states(model, tokenizer, cfg, split: str, count: int, seed: int, keep) -> tuple[torch.Tensor, list, torch.Tensor]:
    """-> ((layers + 1, n, hidden) states, n labels, (n,) the model's P(`<no_ins>`)) at the answer slots whose
    conversation `keep` labels (it returns None for the others); a slot's state is the one that predicts it."""
    mixture = Mixture(training_sources(cfg, split), cfg.data.mixture, seed=seed, length=count)
    collate, ids = Collator(tokenizer, model.cfg), token_ids(tokenizer)
    decisions = torch.tensor([ids.ins, ids.no_ins])
    found, labels, probs = [], [], []
    for start in range(0, count, 16):
        items = [mixture[i] for i in range(start, min(count, start + 16))]
        conversations = [c for item in items for c in item.conversations]  # one row per conversation
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
            label = keep(conversations[row])
            if label is None:
                continue
            found.append(torch.stack([h[row, pos] for h in out.hidden_states]).float())
            labels.append(label)
            logits = model.llm.get_output_embeddings()(out.last_hidden_state[row, pos])[decisions]
            probs.append(float(logits.float().softmax(-1)[1]))
    if not found:
        raise ValueError(f"no slot of {count} {split} items is one to read")
    return torch.stack(found, dim=1), labels, torch.tensor(probs)


def relation_truth(conversation) -> int | None:
    """1 for a relation that holds for nothing, 0 for one that holds; None for other expressions."""
    return int(len(conversation.masks) == 0) if holds_relation(conversation.question) else None


def target_place(conversation) -> tuple[str, float, float] | None:
    """(kind of expression, x, y) of the target's centroid in [0, 1]; None without a target. Echo answers have one
    slot, whose mask is every target's union."""
    if len(conversation.masks) != 1:
        return None
    ys, xs = np.nonzero(conversation.masks[0])
    if len(xs) == 0:
        return None
    height, width = conversation.masks.shape[1:]
    return kind(conversation.answer), float(xs.mean()) / width, float(ys.mean()) / height


def kind(answer: str) -> str:
    """The expression's kind, from an echo answer ("the leftmost star<ins>."), which repeats the expression."""
    expression = answer.split(INS)[0]
    if holds_relation(expression):
        return "relation"
    return "extreme" if EXTREME.search(expression) else "other"


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


def fit_ridge(x: torch.Tensor, y: torch.Tensor, l2: float = 1.0):
    """A ridge regression on standardised features (closed form) -> its prediction function."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = torch.cat([(x - mean) / std, torch.ones(len(x), 1)], dim=1)
    penalty = l2 * torch.eye(z.shape[1])
    penalty[-1, -1] = 0  # the intercept is not shrunk
    w = torch.linalg.solve(z.T @ z + penalty, z.T @ y)
    return lambda v: torch.cat([(v - mean) / std, torch.ones(len(v), 1)], dim=1) @ w


def r2(pred: torch.Tensor, y: torch.Tensor) -> float:
    """1 - residual / total sum of squares over both coordinates: 0 is no better than the mean place."""
    return float(1 - (pred - y).square().sum() / (y - y.mean(0)).square().sum())


def probe_truth(model, tokenizer, cfg, args) -> None:
    """AUC per layer of a logistic regression telling false relations from true, beside the model's own."""
    x_train, y_train, _ = states(model, tokenizer, cfg, "train", args.train, 7, relation_truth)
    x_test, y_test, own = states(model, tokenizer, cfg, "test", args.test, 3, relation_truth)
    y_train, y_test = torch.tensor(y_train), torch.tensor(y_test)
    for name, y, count in (("train", y_train, args.train), ("test", y_test, args.test)):
        if not 0 < int(y.sum()) < len(y):
            raise ValueError(f"{count} {name} items: {len(y)} relation slots, {int(y.sum())} false; need both kinds")
        print(f"{name}: {len(y)} relation slots, {int(y.sum())} of them false")
    print(f"the model's own P(<no_ins>): AUC {auc(own, y_test):.3f}")
    for layer in range(x_train.shape[0]):
        probe = fit_probe(x_train[layer], y_train)
        print(
            f"probe after layer {layer}: AUC train {auc(probe(x_train[layer]), y_train):.3f}, "
            f"test {auc(probe(x_test[layer]), y_test):.3f}"
        )


def probe_place(model, tokenizer, cfg, args) -> None:
    """R^2 per layer of a ridge regression from each slot's state to its target's centroid, by kind of expression."""
    if cfg.data.mixture.tasks.referring.answer_form != "echo":
        raise ValueError("--place tells kinds of expression from echo answers: --config needs answer_form: echo")
    x_train, train, _ = states(model, tokenizer, cfg, "train", args.train, 7, target_place)
    x_test, test, _ = states(model, tokenizer, cfg, "test", args.test, 3, target_place)
    y_train = torch.tensor([t[1:] for t in train])
    y_test = torch.tensor([t[1:] for t in test])
    kinds = sorted({t[0] for t in test})
    print(
        f"slots with a target: train {len(train)}, test {len(test)} ("
        + ", ".join(f"{k} {sum(t[0] == k for t in test)}" for k in kinds)
        + ")"
    )
    for layer in range(x_train.shape[0]):
        ridge = fit_ridge(x_train[layer], y_train)
        pred = ridge(x_test[layer])
        by_kind = []
        for k in kinds:
            rows = torch.tensor([t[0] == k for t in test])
            by_kind.append(f"{k} {r2(pred[rows], y_test[rows]):.3f}")
        train_r2 = r2(ridge(x_train[layer]), y_train)
        print(
            f"probe after layer {layer}: R^2 train {train_r2:.3f}, test {r2(pred, y_test):.3f} ({', '.join(by_kind)})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a checkpoint folder of ours (default: the embedded model)")
    parser.add_argument("--train", type=int, default=1500, help="referring items from `train` to fit on")
    parser.add_argument("--test", type=int, default=600, help="referring items from `test` to score on")
    parser.add_argument("--config", default="configs/train/shapeworld-small.yaml", help="the training config drawn as")
    parser.add_argument("--place", action="store_true", help="probe where each target is instead of relation truth")
    args = parser.parse_args()
    cfg = load_train_config(args.config, OVERRIDES)
    model, tokenizer = load_pretrained(args.model or default_model_dir())
    model.float()
    (probe_place if args.place else probe_truth)(model, tokenizer, cfg, args)


if __name__ == "__main__":
    main()
