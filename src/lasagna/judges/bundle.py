"""`Judges`: the judges a model has, as one module that is built, trained, saved and loaded together (the package's
docstring says what each judge does)."""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from ..config import JudgesConfig
from ..model.lasagna import seeded
from ..tokens import IGNORE_INDEX
from .picker import InstancePicker
from .presence import PresenceVerifier, name_embeddings, name_spans, pool_regions
from .query import QueryVerifier, word_embeddings

PREFIXES = ("verifier.", "query_verifier.", "instance_picker.")
"""State-dict names of the judges, beside the model's in a checkpoint's weights."""


def _zero_loss(module: nn.Module | None) -> torch.Tensor | None:
    """0 with a gradient path to every weight of `module` (DDP needs one on every rank), None without a module."""
    return None if module is None else sum(p.sum() for p in module.parameters()) * 0.0


class Judges(nn.Module):
    """The judges of one model, built for its sizes: SAM's prompt width and the LLM's hidden size."""

    def __init__(self, cfg: JudgesConfig, region_dim: int, word_dim: int, seed: int | None = None):
        super().__init__()
        self.cfg = JudgesConfig()
        self.dims = (region_dim, word_dim)
        self.verifier: PresenceVerifier | None = None
        self.query_verifier: QueryVerifier | None = None
        self.instance_picker: InstancePicker | None = None
        self._every_slot = False
        self.add(cfg, seed)

    @classmethod
    def for_model(cls, model, cfg: JudgesConfig, seed: int | None = None) -> Judges:
        return cls(cfg, model.cfg.sam.prompt_dim, model.cfg.llm.hidden_size, seed)

    @classmethod
    def from_state(cls, model, cfg: JudgesConfig, state: dict[str, torch.Tensor], what: str) -> Judges:
        """The judges `cfg` lists, for `model`, loaded strictly from `state` (`checkpoint.Loaded.judges_state`)."""
        from ..checkpoint import check_keys

        judges = cls.for_model(model, cfg)
        check_keys(set(judges.state_dict()), set(state), f"{what} (judges)")
        judges.load_state_dict(state, strict=True)
        floats = [v.dtype for v in state.values() if v.is_floating_point()]
        return judges.to(device=model.text_projector[0].weight.device, dtype=floats[0] if floats else None).eval()

    def add(self, cfg: JudgesConfig, seed: int | None = None) -> None:
        """Add fresh judges that `cfg` asks for and this one lacks (each decides nothing until trained)."""
        region, word = self.dims
        if cfg.presence_verifier and self.verifier is None:
            with seeded(seed, "verifier"):
                self.verifier = PresenceVerifier(region, word)
            self.cfg.presence_verifier = True
        if cfg.query_verifier and self.query_verifier is None:
            with seeded(seed, "query_verifier"):
                self.query_verifier = QueryVerifier(region, word)
            self.cfg.query_verifier = True
        if cfg.instance_picker and self.instance_picker is None:
            with seeded(seed, "instance_picker"):
                self.instance_picker = InstancePicker(region, word)
            self.cfg.instance_picker = True

    def configure_training(self, verifiers: bool) -> None:
        """Which weights train beside the model: the verifiers (on detached inputs) if `verifiers`; never their
        fusions (fit on held-out scenes afterwards, `calibrate.py`) nor the picker (`lasagna train-picker`)."""
        self.requires_grad_(False)
        for verifier in (self.verifier, self.query_verifier):
            if verifier is not None and verifiers:
                verifier.requires_grad_(True)
                verifier.fusion.requires_grad_(False)

    def forward(self, model, output, inputs) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The verifiers' losses on a teacher-forced batch (`LasagnaModel.forward`'s `output` of `inputs`) ->
        (presence verifier's loss, query verifier's loss), None for one it lacks.

        Every `<ins>`/`<no_ins>` slot's mask is decoded from the hidden state before it, without gradients: the
        verifiers read detached inputs, so training them moves nothing of the model."""
        ids, labels = output.input_ids, output.labels
        following = ids[:, 1:]
        before = torch.zeros_like(ids, dtype=torch.bool)
        before[:, :-1] = (following == model.ins_id) | (following == model.no_ins_id)
        present = torch.zeros_like(before)
        present[:, :-1] = following == model.ins_id
        present = present[before]
        if present.numel() == 0:  # a batch without decisions (VQA alone): 0, with a gradient path for DDP
            return _zero_loss(self.verifier), _zero_loss(self.query_verifier)
        images = output.images
        slot_image = inputs.image_index[before.nonzero()[:, 0]]
        with torch.no_grad():
            prompts = model.text_projector(output.hidden[before])
            skips = tuple(x[slot_image] for x in images.sam_skips)
            low_res = model.sam.decode(images.sam_embeds[slot_image], prompts, skips)
        decision = (ids == model.ins_id) | (ids == model.no_ins_id)
        answer = labels != IGNORE_INDEX
        spans = [ids[row, a:b] for row in range(len(ids)) for a, b in name_spans(answer[row], decision[row])]
        embeds = images.sam_embeds[slot_image].detach()
        presence = query = None
        if self.verifier is not None:
            names = name_embeddings(model.embed_tokens, spans)
            presence = self.verifier.loss(pool_regions(embeds, low_res), names, present)
        if self.query_verifier is not None:
            words, valid = word_embeddings(model.embed_tokens, spans, self.query_verifier.max_words)
            query = self.query_verifier.loss(embeds, low_res, words, valid, present)
        return presence, query

    def _verifier(self, kind: str):
        # why not the presence verifier for queries: a query's name is a phrase ("the star left of the red circle")
        # whose truth it, matching a region against a bag of words, cannot judge; with it, referring scored lower
        return self.verifier if kind == "classes" else self.query_verifier

    # The engine's `Judge` protocol.
    def judges(self, kind: str) -> bool:
        return self._verifier(kind) is not None

    def reach(self, kind: str, llm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) LLM log-odds -> (N,) lowest and highest fused log-odds the verifier of `kind` can give each slot,
        whatever it sees: the engine draws masks only for slots whose highest is >= 0 (`Engine._judge`).

        The band. A fusion is fused = a * llm + b * v + c, linear in the verifier's log-odds v; where v is bounded,
        v in [v_lo, v_hi] (the verifier's `log_odds_range`), fused lies between a * llm + c + b * v_lo and
        a * llm + c + b * v_hi. The verifier can flip a slot only where 0 lies between the two: for a, b > 0, LLM
        log-odds in [-(c + b * v_hi) / a, -(c + b * v_lo) / a]. Below that band the slot is absent whatever its
        mask shows, above it present. The two ends are computed by the fusion itself (`fuse`), whose rounding is
        monotone in v, so they bound what `decide` gives exactly, and equal it where b = 0 (an untrained fusion).
        With `every_slot()` (calibration, which fits the fusion on every slot's evidence) the band is unbounded.

        The embedded model's presence verifier has no finite bound (`PresenceVerifier.log_odds_range`), so with
        its fusion (a = 0.30, b = 0.85) every slot of a class list is seen; its query verifier's bound |v - 0.17| <=
        10.5 and fusion (0.73, 0.30, -2.03) give the band [-1.5, 6.9]: a query slot the LLM answers `<no_ins>`
        below -1.5 needs no mask."""
        verifier = self._verifier(kind)
        llm = llm.float()
        if self._every_slot:
            return torch.full_like(llm, -math.inf), torch.full_like(llm, math.inf)
        v_lo, v_hi = verifier.log_odds_range()
        if float(verifier.fusion.weight[0, 1].detach()) == 0:  # the verifier's say is nil: the ends are the fused value
            v_lo = v_hi = 0.0
        ends = [verifier.fuse(llm, torch.full_like(llm, v)) for v in (v_lo, v_hi)]
        return torch.minimum(*ends), torch.maximum(*ends)

    @contextlib.contextmanager
    def every_slot(self):
        """Within it, `reach` is unbounded: the engine draws and judges every slot (the evidence calibration fits)."""
        self._every_slot = True
        try:
            yield self
        finally:
            self._every_slot = False

    def decide(self, kind: str, slots) -> tuple[torch.Tensor, torch.Tensor]:
        """Every slot of an answer -> ((N,) fused log-odds that it is present, (N, 2) the LLM's and the verifier's
        log-odds: the evidence `lasagna calibrate` fits the fusion on)."""
        verifier = self._verifier(kind)
        judged = verifier.judge(slots.embeds, slots.low_res, slots.names, slots.embed_tokens)
        evidence = torch.stack([slots.llm, judged], -1).float()
        return verifier.fuse(evidence[:, 0], evidence[:, 1]), evidence

    def refine(self, kind: str, slots) -> torch.Tensor:
        """The present slots -> their low-res mask logits, each cut to the pieces its phrase means (queries)."""
        picker = self.instance_picker
        if kind != "query" or picker is None:
            return slots.low_res
        words, valid = word_embeddings(slots.embed_tokens, slots.names, picker.max_words)
        return picker.pick(slots.embeds, slots.low_res, words, valid)


__all__ = ["PREFIXES", "Judges", "JudgesConfig"]
