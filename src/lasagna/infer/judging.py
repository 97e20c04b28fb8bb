"""How the engine hands an answer's decisions to a judge (`Judge`, e.g. `lasagna.judges.Judges`), and which slots'
masks that needs: only those whose fused decision could still be "present" (`Judge.reach`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import torch

if TYPE_CHECKING:
    from ..model.lasagna import ImageEncoding
    from .decode import Decision
    from .engine import Engine

Kind = Literal["classes", "query"]


@dataclass
class Slots:
    """The decisions of one answer as a judge reads them.

    embeds: (N, C, h, w) the image's SAM embedding for each slot; low_res: (N, kh, kw) the mask logits its hidden
    state draws; names: per slot the ids of the name it answers (`name_ids`); llm: (N,) the LLM's log-odds of `<ins>`
    (None for `Judge.refine`, which sees present slots only); embed_tokens: the LLM's input embedding."""

    embeds: torch.Tensor
    low_res: torch.Tensor
    names: list[torch.Tensor]
    llm: torch.Tensor | None
    embed_tokens: torch.nn.Module


class Judge(Protocol):
    """A second opinion on the LLM's decisions, beside the paper's model (`lasagna.judges.Judges` is one).

    judges(kind): whether it decides the decisions of class lists ("classes") or queries ("query"). If so, `reach`
    gives, from the LLM's (N,) log-odds alone, the lowest and highest fused log-odds each slot can get whatever the
    judge sees; a slot whose highest is below 0 is absent without its mask being drawn, and for every other slot the
    mask is decoded and `decide` gives (N,) fused log-odds (present where >= 0) and (N, 2) evidence. refine: the
    present slots' low-res masks as they should be drawn."""

    def judges(self, kind: Kind) -> bool: ...

    def reach(self, kind: Kind, llm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def decide(self, kind: Kind, slots: Slots) -> tuple[torch.Tensor, torch.Tensor]: ...

    def refine(self, kind: Kind, slots: Slots) -> torch.Tensor: ...


def llm_log_odds(scores: torch.Tensor) -> torch.Tensor:
    """P(`<ins>`) of decisions -> the log-odds a judge's fusion weighs, clamped so a sure answer stays finite."""
    return torch.logit(scores.float(), eps=1e-6)


def judge_slots(
    engine: Engine,
    enc: ImageEncoding,
    judge: Judge,
    kind: Kind,
    decisions: list[Decision],
    ids: list[torch.Tensor],
    batch: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An answer's decisions -> (N,) fused log-odds, (N, 2) evidence (CPU) and the low-res masks of the slots fused
    present, in order.

    Slots go to SAM's decoder (`engine.slot_low_res`) and to the judge `batch` at a time, and only those the judge
    could call present (`Judge.reach`): the others are absent whatever their masks would show, keep the highest fused
    log-odds they could reach (below 0) and NaN as the judge's evidence."""
    device = enc.sam_embeds.device
    llm = llm_log_odds(torch.tensor([d.score for d in decisions], device=device))
    _, highest = judge.reach(kind, llm)
    fused = highest.float().clone()
    evidence = torch.stack([llm.float(), torch.full_like(fused, float("nan"))], -1)
    seen = torch.nonzero(highest >= 0).flatten().tolist()
    present = []
    for start in range(0, len(seen), batch):
        part = seen[start : start + batch]
        low = engine.slot_low_res(enc, [decisions[i].hidden for i in part])
        embeds = enc.sam_embeds.expand(len(low), -1, -1, -1)
        slots = Slots(embeds, low, [ids[i] for i in part], llm[part], engine.model.embed_tokens)
        fused[part], evidence[part] = judge.decide(kind, slots)
        present.append(low[fused[part] >= 0])
    low = torch.cat(present) if present else torch.zeros((0, 0, 0), device=device)
    return fused, evidence.cpu(), low
