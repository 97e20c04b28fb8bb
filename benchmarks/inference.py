"""Inference speed: an old commit's code vs this tree's, and the released procedure, with answer agreement.

    python benchmarks/inference.py [--old d803c2b] [--model DIR] [--images 3] [--lists 70,150,20] [--quick]

One run compares (the old commit checked out in a temporary detached git worktree, removed at the end):
- old vs new: `segment(image, classes=..., chunk_size=..., decoder=...)` of each tree's code, in two worker
  processes (`inference_child.py`, `PYTHONPATH=<tree>/src`, 1 torch thread by default) that take turns, image by
  image, so load drift hits both alike. Each tree loads its own embedded model (same weights) unless --model is given.
- the released procedure (one long list, no KV cache, image and sequence re-run every step), as released and
  constrained to the list's template (`released.py`), against this tree's template decoding: at --chunk-size, and
  on one list (chunk size = list length), whose prompt is the constrained procedure's, so that ratio compares
  identical answers.
Images are ShapeWorld test-open scenes the parent writes as PNGs; lists are ShapeWorld's 70 test-open names (the
embedded model's 58 trained names and 12 held-out pairs of known words), the first 20 of them, and 150 (the 70 and
80 made-up colour-shape names, always absent).

Next to every ratio: images with the same present set, classes with the same decision, and over the classes both
call present the mean mask IoU (masks equal: IoU 1). Old/new compares final answers (after the checkpoint's judges);
released/constrained compare the LLM's own decisions (`ClassResult.llm_present`). LLM s: time inside the LLM (forward
hooks); floor s: one unpadded pass over the prefix and every chunk's tokens at this machine's measured matmul rate.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from trees import DEFAULT_OLD, ROOT, Tree, old_and_new

EXTRA_COLOURS = ("gray", "black", "white", "brown", "gold", "silver", "navy", "teal", "lime", "maroon")


def class_list(n: int) -> list[str]:
    """ShapeWorld's 70 test-open names, then made-up colour-shape names (never in a scene) up to n."""
    from lasagna.shapeworld import COLOURS, SHAPES, classes

    names = list(classes("test-open"))
    names += [f"{c} {s}" for c in EXTRA_COLOURS for s in SHAPES]
    if set(EXTRA_COLOURS) & set(COLOURS) or len(set(names)) != len(names):
        raise RuntimeError("made-up names must not be ShapeWorld's")
    if n > len(names):
        raise ValueError(f"--lists: at most {len(names)} names, got {n}")
    return names[:n]


def write_images(folder: Path, count: int) -> list[Path]:
    from lasagna.shapeworld import ShapeWorldSemantic

    source = ShapeWorldSemantic("test-open")
    paths = []
    for i in range(count):
        path = folder / f"test-open-{i}.png"
        Image.fromarray(source[i].load_image()).save(path)
        paths.append(path)
    return paths


class JobError(ValueError):
    """A job the worker refused: its input does not suit the model (a list over its positions, say)."""


class Worker:
    """One tree's `inference_child.py`: a loaded model that answers jobs in turn."""

    def __init__(self, tree: Tree, model: str | None, threads: int, log: Path):
        self.tree, self.log = tree, log
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / "inference_child.py"), model or "-", str(threads)],
            cwd=log.parent,
            env=tree.env(threads),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
        )
        self._read()

    def _read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT ") :])
        raise RuntimeError(f"{self.tree.label}: the worker stopped:\n{self.log.read_text()[-3000:]}")

    def ask(self, **job) -> dict:
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        out = self._read()
        if "error" in out:
            raise JobError(f"{self.tree.label}: {out['error']}")
        return out

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def agreement(a: list[dict], b: list[dict], key: str = "present") -> str:
    """Images with the same present set, classes with the same decision, mean mask IoU where both say present."""
    images = classes = total = 0
    ious = []
    for x, y in zip(a, b, strict=True):
        px, py = np.array(x[key], dtype=object), np.array(y[key], dtype=object)
        same = px == py
        images += bool(same.all())
        classes += int(same.sum())
        total += len(px)
        if key == "present":
            ious += mask_ious(x, y)
    text = f"{images}/{len(a)} img {classes}/{total} cls"
    return text + (f" IoU {np.mean(ious):.3f}" if ious else "") if key == "present" else text


def mask_ious(x: dict, y: dict) -> list[float]:
    """IoU of each class both answers call present."""
    mx = dict(zip(np.flatnonzero(x["present"]), x["masks"], strict=True))
    my = dict(zip(np.flatnonzero(y["present"]), y["masks"], strict=True))
    out = []
    for k in mx.keys() & my.keys():
        union = np.logical_or(mx[k], my[k]).sum()
        out.append(float(np.logical_and(mx[k], my[k]).sum() / union) if union else 1.0)
    return out


def segment_all(worker: Worker, images, names, chunk, decoder, scratch: Path, tag: str) -> list[dict]:
    """One tree's answers to every image, with their timings and masks."""
    out = []
    for i, image in enumerate(images):
        answer = scratch / f"{tag}-{i}.npz"
        r = worker.ask(kind="segment", image=str(image), classes=names, chunk_size=chunk, decoder=decoder,
                       answer=str(answer))  # fmt: skip
        with np.load(answer) as f:
            r.update(present=f["present"].tolist(), masks=f["masks"])
        out.append(r)
    return out


def taking_turns(workers: tuple[Worker, Worker], images, names, chunk, decoder, scratch, tag) -> list[list[dict]]:
    """Both trees' answers, image by image, the tree going first alternating."""
    results: list[list[dict]] = [[], []]
    bar = tqdm(images, desc=f"{tag}, {len(names)} classes", leave=False, file=sys.stderr)
    for i, image in enumerate(bar):
        order = (0, 1) if i % 2 == 0 else (1, 0)
        for k in order:
            results[k] += segment_all(workers[k], [image], names, chunk, decoder, scratch, f"{tag}-{k}-{i}")
    return results


def total(rows: list[dict], key: str = "seconds") -> float:
    return sum(r[key] for r in rows) / len(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], usage="python benchmarks/inference.py [options]")
    ap.add_argument("--old", default=DEFAULT_OLD, help=f"the commit to compare with (default {DEFAULT_OLD})")
    ap.add_argument("--model", help="checkpoint folder both trees load (default: each tree's embedded model)")
    ap.add_argument("--images", type=int, default=3, help="ShapeWorld test-open images (default 3)")
    ap.add_argument("--lists", default="70,150,20", help="list lengths, comma-separated (default 70,150,20)")
    ap.add_argument("--chunk-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each worker (default 1)")
    ap.add_argument("--no-released", action="store_true", help="skip the released procedure (slow on long lists)")
    ap.add_argument("--quick", action="store_true", help="1 image, lists of 4 and 6 names: a smoke run")
    args = ap.parse_args(argv)
    lists = [4, 6] if args.quick else [int(n) for n in args.lists.split(",")]
    count = 1 if args.quick else args.images
    if count < 1 or args.chunk_size < 1 or min(lists) < 1:
        raise ValueError("--images, --chunk-size and every --lists length must be >= 1")
    chunk = min(args.chunk_size, 3) if args.quick else args.chunk_size
    with old_and_new(args.old) as trees, tempfile.TemporaryDirectory(prefix="lasagna-inference-") as tmp:
        scratch = Path(tmp)
        images = write_images(scratch, count)
        workers = tuple(Worker(t, args.model, args.threads, scratch / f"worker-{k}.log") for k, t in enumerate(trees))
        try:
            report(workers, images, lists, chunk, not args.no_released, scratch, args)
        finally:
            for w in workers:
                w.close()
    return 0


def report(workers, images, lists, chunk, with_released, scratch: Path, args) -> None:
    old, new = workers
    print(
        f"model: {args.model or 'each tree’s embedded shapeworld-small'}; {len(images)} ShapeWorld test-open "
        f"image(s); {args.threads} torch thread(s); old = {old.tree.label}, new = this tree; seconds per image"
    )
    print(f"{'classes':>7} {'decoder':>8} {'chunk':>5} | {'old s':>6} {'new s':>6} {'old/new':>7} | "
          f"{'agreement old vs new':<30} | {'new LLM s':>9} {'floor s':>7} {'LLM/floor':>9} "
          f"{'old LLM/floor':>13}")  # fmt: skip
    warm = class_list(min(lists))
    for worker in workers:  # first-call costs (allocations, lazy imports) stay out of the timings
        for decoder in ("template", "free"):
            segment_all(worker, images[:1], warm, chunk, decoder, scratch, "warm-up")
    template: dict[int, list[dict]] = {}
    for n in lists:
        names = class_list(n)
        fl = [new.ask(kind="floor", image=str(im), classes=names, chunk_size=chunk) for im in images]
        floor_s = total(fl, "floor_seconds")
        for decoder in ("template", "free"):
            a, b = taking_turns(workers, images, names, chunk, decoder, scratch, f"{n}-{decoder}")
            if decoder == "template":
                template[n] = b
            llm = total(b, "llm_seconds")
            floors = f"{llm:>9.3f} {floor_s:>7.3f} {llm / floor_s:>9.1f} {total(a, 'llm_seconds') / floor_s:>13.1f}"
            print(f"{n:>7} {decoder:>8} {chunk:>5} | {total(a):>6.2f} {total(b):>6.2f} {total(a) / total(b):>7.1f} | "
                  f"{agreement(a, b):<30} | {floors if decoder == 'template' else ''}")  # fmt: skip
        print(f"{'':>7} floor: {fl[0]['tokens']} tokens, {fl[0]['gflop']:.2f} GFLOP at {fl[0]['gflops']:.1f} GFLOP/s")
    if not with_released:
        return
    print("\nreleased procedure (this tree's model and code; one list, no cache, re-encoded every step) vs this tree")
    print(f"{'classes':>7} | {'released s':>10} {'constr. s':>9} {'tmpl s':>6} {'one-list s':>10} | "
          f"{'rel/tmpl':>8} {'agreement (LLM decisions)':<26} | {'constr/one-list':>15} {'agreement':<20}")  # fmt: skip
    for n in lists:
        names = class_list(n)
        try:
            one = segment_all(new, images, names, n, "template", scratch, f"one-{n}")
        except JobError as err:  # a list over the model's positions in one prompt
            print(f"{n:>7} | one list does not fit the model: {err}")
            continue
        bar = tqdm(images, desc=f"released, {n} classes", leave=False, file=sys.stderr)
        rel = [new.ask(kind="released", image=str(im), classes=names) for im in bar]
        bar = tqdm(images, desc=f"constrained, {n} classes", leave=False, file=sys.stderr)
        con = [new.ask(kind="constrained", image=str(im), classes=names) for im in bar]
        for r in rel:  # a name the free answer never gives is answered absent
            r["llm_present"] = [bool(x) for x in r["llm_present"]]
        tm = [{"llm_present": r["llm_present"]} for r in template[n]]
        ol = [{"llm_present": r["llm_present"]} for r in one]
        if any(r["llm_present"] is None for r in tm + ol):
            raise RuntimeError("this tree's Prediction must report the LLM's own decisions (llm_present)")
        print(f"{n:>7} | {total(rel):>10.2f} {total(con):>9.2f} {total(template[n]):>6.2f} {total(one):>10.2f} | "
              f"{total(rel) / total(template[n]):>8.1f} {agreement(rel, tm, 'llm_present'):<26} | "
              f"{total(con) / total(one):>15.1f} {agreement(con, ol, 'llm_present'):<20}")  # fmt: skip
        print(
            f"{'':>7}   released generated {total(rel, 'generated'):.0f} tokens per image, constrained "
            f"{total(con, 'generated'):.0f}"
        )


if __name__ == "__main__":
    sys.exit(main())
