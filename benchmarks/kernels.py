"""Which attention kernels inference runs with on CPU: each choice timed against the others in one run, with the
agreement of their answers.

    python benchmarks/kernels.py [--model DIR] [--images 6] [--classes 70] [--rounds 3]

Three settings of one loaded model, taking turns image set by image set (so load drift hits all alike):
- "math/sdpa": SAM's mask decoder on torch's math kernel and the LLM on SDPA (the code before this choice);
- "fused/sdpa": the mask decoder on torch's default (fused) kernel, as `model/sam.py: decoder_attention` picks
  without gradients;
- "fused/eager": and the LLM on plain matmuls, as `Lasagna.from_pretrained` sets on CPU.
Seconds per image (whole `segment` call, and the LLM's part by forward hooks), ShapeWorld test-open scenes, the
first `--classes` of its 70 names, 1 torch thread. Agreement against the first setting: classes with the same
decision, the largest change of a class's score, and the mean IoU of the masks both call present.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel


class Clock:
    """Seconds inside the LLM's decoder stack."""

    def __init__(self, decoder: torch.nn.Module):
        self.seconds, self._start = 0.0, 0.0
        decoder.register_forward_pre_hook(self._enter)
        decoder.register_forward_hook(self._leave)

    def _enter(self, *_) -> None:
        self._start = time.perf_counter()

    def _leave(self, *_) -> None:
        self.seconds += time.perf_counter() - self._start


def agreement(base: list, other: list) -> str:
    same = total = 0
    drift, ious = 0.0, []
    for a, b in zip(base, other, strict=True):
        for x, y in zip(a.classes, b.classes, strict=True):
            total += 1
            same += x.present == y.present
            drift = max(drift, abs(x.score - y.score))
            if x.present and y.present:
                union = np.logical_or(x.mask, y.mask).sum()
                ious.append(np.logical_and(x.mask, y.mask).sum() / union if union else 1.0)
    return f"{same}/{total} cls, score drift {drift:.4f}, IoU {np.mean(ious) if ious else 1.0:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--model", help="checkpoint folder (default: the embedded model)")
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--classes", type=int, default=70, help="the first N of ShapeWorld's 70 test-open names")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore", UserWarning)
    torch.set_num_threads(1)
    import lasagna.model.sam as sam_module
    from lasagna.api import Lasagna
    from lasagna.shapeworld import ShapeWorldSemantic, classes

    api = Lasagna.from_pretrained(args.model, device="cpu")
    source = ShapeWorldSemantic("test-open")
    images = [source[i].load_image() for i in range(args.images)]
    names = list(classes("test-open"))[: args.classes]
    clock = Clock(api.model.llm.get_decoder())
    fused = sam_module.decoder_attention
    settings = {
        "math/sdpa": (lambda device: sdpa_kernel(SDPBackend.MATH), "sdpa"),
        "fused/sdpa": (fused, "sdpa"),
        "fused/eager": (fused, "eager"),
    }
    seconds = {k: [0.0, 0.0] for k in settings}
    answers: dict[str, list] = {}
    try:
        for _ in range(args.rounds):
            for key, (kernel, llm_attention) in settings.items():
                sam_module.decoder_attention = kernel
                api.model.llm.set_attn_implementation(llm_attention)
                clock.seconds, start = 0.0, time.perf_counter()
                answers[key] = [api.segment(im, classes=names) for im in images]
                seconds[key][0] += time.perf_counter() - start
                seconds[key][1] += clock.seconds
    finally:
        sam_module.decoder_attention = fused
    per = args.rounds * len(images)
    base_key = next(iter(settings))
    print(f"{len(images)} images x {len(names)} classes, {args.rounds} rounds, 1 thread; seconds per image")
    print(f"{'decoder/LLM attention':<22} {'s/img':>6} {'LLM s':>6} {'speed-up':>8} | agreement with {base_key}")
    for key, (total, llm) in seconds.items():
        ratio = seconds[base_key][0] / total
        line = f"{key:<22} {total / per:>6.3f} {llm / per:>6.3f} {ratio:>7.2f}x | "
        print(line + agreement(answers[base_key], answers[key]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
