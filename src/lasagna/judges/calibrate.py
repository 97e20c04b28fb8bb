"""Fit a verifier's fusion on held-out scenes: `lasagna calibrate`, and the end of `lasagna train`.

The fusion weighs the LLM's log-odds of `<ins>` against the verifier's (`presence.py`, `query.py`). Fit on the
training data it would trust the LLM most, whose answers there are surer than on new images; so it is fit on scenes
the model never trained on, asked as `lasagna eval` asks: each scene's full class list in chunks for the presence
verifier, each referring expression for the query verifier. Present and absent count by their kind's share (balanced
BCE): a full list is mostly absent classes, and misses and false alarms weigh alike unless `absent_weight` says a false
alarm costs more (or less) than a miss: the operating point of a model whose targets ask more of rejection than of
recall, chosen on held-out scenes (`tools/operating_points.py` shows the trade).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..config import JudgesConfig
from ..data.records import IGNORE_LABEL


def collect_evidence(lasagna, source, count: int, chunk_size: int = 16, progress: bool = True):
    """The first `count` scenes of a semantic source -> ((N, 2) LLM and verifier log-odds, (N,) bool present)."""
    judges = _judges(lasagna)
    _check(judges.verifier, "presence", count)
    evidence, present = [], []
    with judges.every_slot():  # why: the fusion is fit on every slot, also those its current band would skip
        for index in tqdm(range(min(count, len(source))), desc=f"calibrate {source.name}", disable=not progress):
            record = source[index]
            classes = list(record.classes)
            held = {classes[k] for k in np.unique(record.load_label()) if k != IGNORE_LABEL}
            pred = lasagna.segment(record.load_image(), classes=classes, chunk_size=chunk_size)
            named = ~torch.isnan(pred.evidence).any(1)  # free decoding may leave a class unnamed
            evidence.append(pred.evidence[named])
            present.append(torch.tensor([c in held for c in classes])[named])
    return torch.cat(evidence), torch.cat(present)


def _judges(lasagna):
    """The judges of a loaded model (`Lasagna.judges`), or an empty set of them."""
    from . import Judges

    return lasagna.judges if lasagna.judges is not None else Judges.for_model(lasagna.model, JudgesConfig())


def _check(verifier, kind: str, count: int) -> None:
    if verifier is None:
        raise ValueError(f"this model has no {kind} verifier to calibrate (judges.{kind}_verifier is false)")
    if count < 1:
        raise ValueError(f"calibration needs at least one scene, got {count}")


def fit_fusion(
    evidence: torch.Tensor, present: torch.Tensor, absent_weight: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 2) log-odds and (N,) bool -> (weight (1, 2), bias (1,)) of the balanced-BCE logistic fit, the absent kind
    weighed `absent_weight` times the present one."""
    if not absent_weight > 0:
        raise ValueError(f"absent_weight must be positive, got {absent_weight}")
    if not bool(present.any()) or bool(present.all()):
        raise ValueError(
            "calibration needs present and absent among its answers (classes, or expressions with and "
            "without a target); give it more scenes"
        )
    fusion = torch.nn.Linear(2, 1)
    with torch.no_grad():
        fusion.weight.copy_(torch.tensor([[1.0, 1.0]]))
        fusion.bias.zero_()
    x, y = evidence.float(), present.float()
    pos_weight = (1 - y).sum() / y.sum() / absent_weight
    optimizer = torch.optim.LBFGS(fusion.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(fusion(x)[:, 0], y, pos_weight=pos_weight)
        loss.backward()
        return loss

    optimizer.step(closure)
    return fusion.weight.detach(), fusion.bias.detach()


def calibrate(
    lasagna, source, count: int, chunk_size: int = 16, progress: bool = True, absent_weight: float = 1.0
) -> dict:
    """Fit the presence verifier's fusion of `lasagna`'s model in place on `count` scenes of a semantic `source`;
    returns a report."""
    evidence, present = collect_evidence(lasagna, source, count, chunk_size, progress)
    report = _fit_into(lasagna.judges.verifier.fusion, evidence, present, absent_weight)
    return {"scenes": min(count, len(source)), "classes": len(present), **report}


def calibrate_queries(
    lasagna, source, count: int, progress: bool = True, absent_weight: float = 1.0, tokens: int = 128
) -> dict:
    """Fit the query verifier's fusion in place on every decision of the model's answers to the expressions of
    `count` scenes of a referring `source`, each decision against whether its expression has a target."""
    from .answers import auc, collect_answers

    _check(_judges(lasagna).query_verifier, "query", count)
    answers = collect_answers(lasagna, source, count, max_new_tokens=tokens, progress=progress)
    evidence = query_evidence(lasagna, answers)
    report = _fit_into(lasagna.judges.query_verifier.fusion, evidence, answers.present, absent_weight)
    aucs = {"auc_llm": auc(evidence[:, 0], answers.present), "auc_verifier": auc(evidence[:, 1], answers.present)}
    return {"scenes": min(count, len(source)), "decisions": len(answers), **report, **aucs}


def query_evidence(lasagna, answers) -> torch.Tensor:
    """The (N, 2) LLM and query-verifier log-odds of each decision of `answers` (`answers.py`)."""
    from .answers import judge_answers

    judged = judge_answers(lasagna.judges.query_verifier, answers, lasagna.model.embed_tokens)
    return torch.stack([answers.llm, judged], -1)


def calibrate_model(
    lasagna,
    sources: dict,
    count: int,
    chunk_size: int = 16,
    progress: bool = True,
    absent_weights: dict[str, float] | None = None,
) -> dict:
    """Fit every verifier the model has, each on its task's source of `sources` (`eval.open_eval_sources`) and with
    its `absent_weights` entry ("presence", "query"; 1 where none) -> {"presence": report, "query": report}, for
    those it has."""
    weights = absent_weights or {}
    judges = _judges(lasagna)
    jobs = {"presence": ("semantic", judges.verifier), "query": ("referring", judges.query_verifier)}
    jobs = {name: task for name, (task, verifier) in jobs.items() if verifier is not None}
    if not jobs:
        raise ValueError("this model has no presence verifier and no query verifier to calibrate")
    for name, task in jobs.items():  # checked first, so nothing is fit when one cannot be
        if task not in sources:
            raise ValueError(f"no {task} data to calibrate the {name} verifier on")
    reports = {}
    for name, task in jobs.items():
        if name == "presence":
            reports[name] = calibrate(lasagna, sources[task], count, chunk_size, progress, weights.get(name, 1.0))
        else:
            reports[name] = calibrate_queries(lasagna, sources[task], count, progress, weights.get(name, 1.0))
    return reports


def decision_rates(evidence: torch.Tensor, present: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> dict:
    """How a fusion (weight (1, 2), bias (1,)) decides (N, 2) log-odds: present recall and absent rejection."""
    decided = (evidence.float() @ weight.float().T + bias.float())[:, 0] >= 0
    return {
        "present_recall": float(decided[present].float().mean()),
        "absent_rejection": float((~decided[~present]).float().mean()),
    }


def _fit_into(fusion: torch.nn.Linear, evidence: torch.Tensor, present: torch.Tensor, absent_weight: float) -> dict:
    weight, bias = fit_fusion(evidence, present, absent_weight)
    with torch.no_grad():
        fusion.weight.copy_(weight.to(fusion.weight.dtype))
        fusion.bias.copy_(bias.to(fusion.bias.dtype))
    return {
        "absent_weight": absent_weight,
        "weight_llm": float(weight[0, 0]),
        "weight_verifier": float(weight[0, 1]),
        "bias": float(bias[0]),
        **decision_rates(evidence, present, weight, bias),
    }
