"""The released procedure and the LLM's floor, for `benchmarks/inference.py` (run inside its worker, this tree only).

Released (LISA / LaSagnA's `evaluate`): the whole class list in one prompt, greedy decoding with no KV cache, the image
encoded again and the whole sequence run again at every step; its answer is parsed as free text. Constrained: the
same loop, but each step may only emit the token that continues the template `name<ins>` / `name<no_ins>` of the
list (a free choice only between `<ins>` and `<no_ins>`), so its answer is the one template decoding of the same
one-list prompt must give. The floor: FLOPs of one unpadded pass over the tokens an answer needs (the shared prefix
once, then every chunk's own tokens), at the matmul rate this machine reaches on the LLM's shapes.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from lasagna.infer.decode import Decision, RowResult
from lasagna.infer.parse import parse_row
from lasagna.model.mllm import expand_images
from lasagna.tokens import IMAGE_TOKEN_ID

MARGIN = 16
"""Tokens the released procedure may generate beyond a full template answer before it is cut."""


@torch.no_grad()
def _next_logits(api, image: np.ndarray, ids: list[int]) -> torch.Tensor:
    """One released step: encode the image, run the whole sequence, (V,) logits of the next token."""
    engine, model = api.engine, api.model
    enc, _, _ = engine.encode_image(image)
    x = torch.tensor([ids], device=enc.llm_feats.device)
    ex = expand_images(model.embed_tokens, x, torch.ones_like(x), enc.llm_feats, model.pad_id)
    hidden = model.llm.get_decoder()(inputs_embeds=ex.embeds, use_cache=False).last_hidden_state
    return model.llm.get_output_embeddings()(hidden[0, -1])


def released(api, image: np.ndarray, names: list[str]) -> tuple[list[bool | None], int]:
    """(per name: the LLM's decision, None where the answer never names it; tokens generated)."""
    engine = api.engine
    ids_ = engine.ids
    prompt = engine.chunk_rows([names], "free").rows[0]
    template = engine.chunk_rows([names], "template")
    full, start = template.rows[0], template.starts[0]
    ids = list(prompt)
    for _ in range(len(full) - start + MARGIN):
        nxt = int(_next_logits(api, image, ids).argmax())
        if nxt == ids_.eos:
            break
        ids.append(nxt)
    answer = ids[len(prompt) :]
    decisions = [Decision(i, t == ids_.ins, 1.0) for i, t in enumerate(answer) if t in (ids_.ins, ids_.no_ins)]
    items = parse_row(api.tokenizer, RowResult(ids=answer, decisions=decisions), names)
    said = {p.name: bool(p.present) for p in items if p.name is not None}
    return [said.get(n) for n in names], len(answer)


def constrained(api, image: np.ndarray, names: list[str]) -> tuple[list[bool], int]:
    """(per name: the LLM's decision, tokens generated) with every step held to the list's template."""
    engine = api.engine
    ins, no_ins = engine.ids.ins, engine.ids.no_ins
    template = engine.chunk_rows([names], "template")
    full, start = template.rows[0], template.starts[0]
    ids, decisions = list(full[:start]), []
    for token in full[start:]:
        logits = _next_logits(api, image, ids)
        if token in (ins, no_ins):
            token = ins if logits[ins] >= logits[no_ins] else no_ins
            decisions.append(token == ins)
        ids.append(token)
    return decisions, len(full) - start


@torch.no_grad()
def matmul_rate(layer: nn.Module, tokens: int, dtype: torch.dtype, min_seconds: float = 0.2) -> float:
    """FLOP/s of `tokens` rows through every linear map of one decoder layer, best of repeats."""
    linears = [m for m in layer.modules() if isinstance(m, nn.Linear)]
    inputs = {m.in_features: torch.randn(tokens, m.in_features, dtype=dtype) for m in linears}
    flops = sum(2 * tokens * m.in_features * m.out_features for m in linears)
    best, spent = float("inf"), 0.0
    while spent < min_seconds or best == float("inf"):
        start = time.perf_counter()
        for m in linears:
            inputs[m.in_features] @ m.weight.T
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
    return flops / best


def floor(api, image: np.ndarray, names: list[str], chunk_size: int) -> dict:
    """The floor of the LLM part of one template answer of `names` in chunks of `chunk_size`."""
    engine, llm = api.engine, api.model.llm
    chunks = [names[i : i + chunk_size] for i in range(0, len(names), chunk_size)]
    rows = engine.chunk_rows(chunks, "template").rows
    shared = min(next((i for i, t in enumerate(r) if t != rows[0][i]), len(r)) for r in rows)
    if rows[0][:shared].count(IMAGE_TOKEN_ID) != 1:
        raise RuntimeError("the shared prefix must hold the image token once")
    enc, _, _ = engine.encode_image(image)
    prefix = shared - 1 + enc.llm_feats.shape[1]  # the image token stands for this many positions
    contexts = list(range(1, prefix + 1)) + [prefix + j for r in rows for j in range(1, len(r) - shared + 1)]
    cfg = llm.config
    heads = cfg.num_attention_heads
    width = heads * (getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    layers = llm.get_decoder().layers
    linear = sum(m.weight.numel() for m in layers[0].modules() if isinstance(m, nn.Linear))
    per_layer = sum(2 * linear + 4 * width * c for c in contexts)
    head = 2 * cfg.hidden_size * cfg.vocab_size * len(names)  # logits only where a decision is read
    flops = len(layers) * per_layer + head
    rate = matmul_rate(layers[0], len(contexts), next(llm.parameters()).dtype)
    return {"floor_seconds": flops / rate, "tokens": len(contexts), "gflop": flops / 1e9, "gflops": rate / 1e9}


def job(api, clock, job: dict, image: np.ndarray) -> dict:
    """A worker job: "released", "constrained" (timed, with the LLM's decisions) or "floor"."""
    if job["kind"] == "floor":
        return floor(api, image, job["classes"], job["chunk_size"])
    run = released if job["kind"] == "released" else constrained
    llm_before = clock.seconds
    start = time.perf_counter()
    decisions, generated = run(api, image, job["classes"])
    return {
        "seconds": time.perf_counter() - start,
        "llm_seconds": clock.seconds - llm_before,
        "llm_present": decisions,
        "generated": generated,
    }
