"""Inference speed: the released procedure vs ours, on the same model and images, side by side.

    python benchmarks/inference.py [--model DIR] [--images 3] [--chunk-size 16] [--device cuda]

(a) released: the whole class list in one prompt, greedy decoding that re-runs the full sequence (image encoder
    included) at every step, no KV cache, hidden states read from the last full pass;
(b) free decoding with a KV cache, the list in chunks batched over one image encode and one shared prefix;
(c) template decoding (chunks, verification passes; needs a model trained with target order consistency).
For 150 and 20 classes it prints per-image seconds, the ratios a/c and b/c, and on how many images (b) and (a)
found the same present set as (c). They agree exactly only for a model that answers in the trained format (free
decoding then emits the template); `--strict` makes a (b)/(c) disagreement an error. (a) asks a different prompt
(one long list), so its agreement is only reported; "(a) tokens" is how many tokens it generated per image (it
stops at the model's end of sequence, so a model that gives up early makes (a) look cheaper than it is).
"""

from __future__ import annotations

import argparse
import time

import torch

from lasagna import prompts
from lasagna.api import Lasagna
from lasagna.infer.decode import Decision, RowResult
from lasagna.infer.engine import check_classes
from lasagna.infer.parse import parse_row
from lasagna.model.mllm import expand_images
from lasagna.prompts import semantic_question
from lasagna.shapeworld import COLOURS, SHAPES, ShapeWorldSemantic, classes
from lasagna.tokenization import encode

EXTRA_COLOURS = ("gray", "black", "white", "brown", "gold", "silver", "navy", "teal", "lime", "maroon")


def class_list(n: int) -> list[str]:
    """ShapeWorld's 70 names, then made-up colour-shape names (always absent) up to n."""
    names = list(classes("test-open"))
    names += [f"{c} {s}" for c in EXTRA_COLOURS for s in SHAPES]
    assert len(set(names)) == len(names) and not set(EXTRA_COLOURS) & set(COLOURS)
    return names[:n]


@torch.no_grad()
def released_procedure(
    api: Lasagna, image, names: list[str], max_new_tokens: int, stop_at_eos: bool = True
) -> tuple[set[str], int]:
    """Greedy decoding without a cache: every step re-encodes the image and re-runs the whole sequence.

    With stop_at_eos False it runs all `max_new_tokens` steps: the cost of a model that answers every class.
    """
    engine, model, tok = api.engine, api.model, api.tokenizer
    ids = encode(tok, prompts.render([(semantic_question(names), None)], tok.eos_token), engine.style)
    prompt_len = len(ids)
    for _ in range(max_new_tokens):
        enc, _, _ = engine.encode_image(image)
        x = torch.tensor([ids], device=enc.llm_feats.device)
        ex = expand_images(model.embed_tokens, x, torch.ones_like(x), enc.llm_feats, model.pad_id)
        hidden = model.llm.get_decoder()(inputs_embeds=ex.embeds, use_cache=False).last_hidden_state
        nxt = int(model.llm.get_output_embeddings()(hidden[0, -1]).argmax())
        if nxt == engine.ids.eos and stop_at_eos:
            break
        ids.append(nxt)
    answer = ids[prompt_len:]
    decisions = [
        Decision(i, t == engine.ids.ins, 1.0) for i, t in enumerate(answer) if t in (engine.ids.ins, engine.ids.no_ins)
    ]
    items = parse_row(tok, RowResult(ids=answer, decisions=decisions), names)
    return {p.name for p in items if p.name is not None and p.present}, len(answer)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="checkpoint folder (default: the embedded ShapeWorld model)")
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--chunk-size", type=int, default=16)
    ap.add_argument(
        "--full-answers", action="store_true", help="(a) decodes a full-length answer instead of stopping at eos"
    )
    ap.add_argument("--strict", action="store_true", help="fail unless (b) and (c) agree on every image")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--device", default="cpu", help="where the model runs, e.g. cuda (default: cpu)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    api = Lasagna.from_pretrained(args.model)
    api.model.to(args.device)
    source = ShapeWorldSemantic("test-open")
    images = [source[i].load_image() for i in range(args.images)]
    print(
        f"model: {args.model or 'embedded shapeworld-small'}; {args.images} ShapeWorld test-open images; "
        f"chunk size {args.chunk_size}; device {args.device}, {next(api.model.parameters()).dtype}; "
        f"torch threads {torch.get_num_threads()}"
    )
    print(
        f"{'classes':>7} | {'(a) released s':>14} | {'(b) free+cache s':>16} | {'(c) template s':>14} | "
        f"{'a/c':>6} | {'b/c':>5} | b=c sets | a=c sets"
    )
    api.segment(images[0], classes=check_classes(class_list(20)))  # warm-up: first-call costs stay out of the timings
    for n in (150, 20):
        names = check_classes(class_list(n))
        t = {"a": 0.0, "b": 0.0, "c": 0.0}
        same_bc = same_ac = generated = 0
        # a full answer: every name's tokens plus its decision token, then eos
        full = len(encode(api.tokenizer, "".join(f"{c}<ins>" for c in names), api.engine.style, add_bos=False)) + 1
        budget = full if args.full_answers else 4 * n + 16
        for image in images:
            (a, tokens), ta = timed(released_procedure, api, image, names, budget, not args.full_answers)
            generated += tokens
            b, tb = timed(api.segment, image, classes=names, chunk_size=args.chunk_size, decoder="free")
            c, tc = timed(api.segment, image, classes=names, chunk_size=args.chunk_size, decoder="template")
            t["a"] += ta
            t["b"] += tb
            t["c"] += tc
            same_bc += set(b.present) == set(c.present)
            same_ac += a == set(c.present)
        k = len(images)
        if args.strict:
            assert same_bc == k, f"free and template decoding disagree on {k - same_bc} of {k} images ({n} classes)"
        print(
            f"{n:>7} | {t['a'] / k:>14.2f} | {t['b'] / k:>16.2f} | {t['c'] / k:>14.2f} | "
            f"{t['a'] / t['c']:>6.1f} | {t['b'] / t['c']:>5.1f} | {same_bc}/{k}      | {same_ac}/{k}      | "
            f"{generated / k:.0f}"
        )


if __name__ == "__main__":
    main()
