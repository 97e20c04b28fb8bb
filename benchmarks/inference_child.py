"""The worker of `benchmarks/inference.py`: loads one tree's model and answers timing jobs, one JSON line each.

    PYTHONPATH=<tree>/src python benchmarks/inference_child.py MODEL_DIR|- THREADS

Reads jobs from stdin and writes one `RESULT {...}` line per job to stdout. The `segment` job uses only the public
API that every compared commit has (`Lasagna.from_pretrained(path)`, `segment(image, classes=..., chunk_size=...,
decoder=...)`, `model.llm`); `released`, `constrained` and `floor` reach into this tree's engine (`released.py`) and
are asked of this tree only. Masks go to an .npz file the job names, so the parent compares pixels across trees.
"""

from __future__ import annotations

import json
import sys
import time
import warnings

import numpy as np
import torch
from PIL import Image

from lasagna.api import Lasagna


class LLMClock:
    """Seconds spent inside the LLM (its decoder stack and its output head), by forward hooks."""

    def __init__(self, llm: torch.nn.Module):
        self.seconds = 0.0
        self.calls = 0
        self._start: list[float] = []
        for module in (llm.get_decoder(), llm.get_output_embeddings()):
            module.register_forward_pre_hook(self._enter)
            module.register_forward_hook(self._leave)

    def _enter(self, *_) -> None:
        self._start.append(time.perf_counter())

    def _leave(self, *_) -> None:
        self.seconds += time.perf_counter() - self._start.pop()
        self.calls += 1


def read_image(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def save_answer(path: str, names: list[str], present: list[bool], masks: dict[str, np.ndarray], shape) -> None:
    """Present flags and a (K, H, W) stack of the present classes' masks, in the order of `names`."""
    stack = [masks.get(n, np.zeros(shape, bool)) for n, yes in zip(names, present, strict=True) if yes]
    np.savez_compressed(path, present=np.array(present, bool), masks=np.array(stack, bool).reshape(-1, *shape))


def segment_job(api: Lasagna, clock: LLMClock, job: dict) -> dict:
    image = read_image(job["image"])
    llm_before, calls_before = clock.seconds, clock.calls
    start = time.perf_counter()
    pred = api.segment(image, classes=job["classes"], chunk_size=job["chunk_size"], decoder=job["decoder"])
    seconds = time.perf_counter() - start
    by_name = {c.name: c for c in pred.classes}
    present = [bool(by_name[n].present) for n in job["classes"]]
    masks = {n: by_name[n].mask for n, yes in zip(job["classes"], present, strict=True) if yes}
    save_answer(job["answer"], job["classes"], present, masks, image.shape[:2])
    # The LLM's own decisions (before a judge), where this commit reports them: what the released procedure answers.
    llm = [getattr(by_name[n], "llm_present", None) for n in job["classes"]]
    return {
        "seconds": seconds,
        "llm_seconds": clock.seconds - llm_before,
        "llm_calls": clock.calls - calls_before,
        "llm_present": None if None in llm else [bool(x) for x in llm],
    }


def main() -> None:
    model, threads = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(threads)
    warnings.simplefilter("ignore", UserWarning)  # why: names outside the vocabulary are asked on purpose
    api = Lasagna.from_pretrained(None if model == "-" else model)
    clock = LLMClock(api.model.llm)
    print("RESULT " + json.dumps({"ready": True, "torch": torch.__version__}), flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        try:
            if job["kind"] == "segment":
                out = segment_job(api, clock, job)
            else:
                import released  # this tree's internals: asked of this tree only

                out = released.job(api, clock, job, read_image(job["image"]))
        except ValueError as err:  # bad input for this model (a list over its positions): the parent reports it
            out = {"error": f"{type(err).__name__}: {err}"}
        print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
