"""The GPU check's measurements (benchmarks/gpu_check.sh installs, then runs this): LaSagnA-7B's shapes with random
weights, saved as a checkpoint of ours and loaded back in bf16 and in 4-bit, one table.

    python benchmarks/gpu_check.py [--work /tmp/lasagna-gpu-check] [--settings bf16,4bit] [--images 16]
    python benchmarks/gpu_check.py --preset tiny --device cpu --images 4 --timed 1   # the same path, on a laptop

Per setting: load time (`Lasagna.from_pretrained` from disk onto the device), the weights' GPU memory after loading,
peak GPU memory over everything below, seconds per image for 20 and 150 classes (template decoding, chunks of 16,
mean over `--timed` images after a warm-up), and images/s over a folder of `--images` PNGs (read from disk, then
`infer.batch.segment_batch` on batches of 1 and of 4, 150 classes).

Random weights answer at random, so only costs mean anything; each setting answers for itself. The tokenizer has
LLaMA's shape: a sentencepiece BPE trained here on class names, padded to 32,000 pieces, with the 7 LaSagnA tokens
after them (32,007 rows, as the released checkpoint's embeddings).
"""

from __future__ import annotations

import argparse
import gc
import shutil
import string
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LLAMA_PIECES = 32000
SETTINGS = {
    "bf16": {"dtype": "bf16"},
    "fp16": {"dtype": "fp16"},
    "8bit": {"dtype": "bf16", "quantize": "8bit"},
    "4bit": {"dtype": "bf16", "quantize": "4bit"},
}
"""`Lasagna.from_pretrained` options of each setting (quantized: the rest of the model in bf16)."""


def llama_shaped_tokenizer(folder: Path, names: list[str], pieces: int = LLAMA_PIECES):
    """A LLaMA-layout tokenizer (tokenizer.model + the release's json files) with `pieces` sentencepiece pieces and
    the LaSagnA tokens after them, built offline as the tests build theirs (tests/helpers.py), then loaded."""
    from sentencepiece import sentencepiece_model_pb2
    from transformers import AutoTokenizer

    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import write_released_layout, write_released_tokenizer
    from lasagna.prompts import render, semantic_question

    folder.mkdir(parents=True, exist_ok=True)
    questions = [semantic_question(names[i : i + 16]) for i in range(0, len(names), 16)]
    # every printable character, so no text of a prompt is outside the vocabulary (it has no byte fallback)
    lines = [render([(q, None)], "</s>") for q in questions] + names + [string.printable.strip()]
    write_released_tokenizer(folder, lines * 20, vocab_size=300)
    path = folder / "tokenizer.model"
    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString(path.read_bytes())
    have = {p.piece for p in model.pieces}
    k = 0
    while len(model.pieces) < pieces:  # why: unreachable filler pieces give the embeddings LLaMA's 32,000 rows
        k += 1
        if f"▁zz{k}" not in have:
            model.pieces.add(piece=f"▁zz{k}", score=-float(len(model.pieces)), type=1)
    path.write_bytes(model.SerializeToString())
    rows = write_released_layout(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if len(tokenizer) != rows:
        raise RuntimeError(f"the tokenizer has {len(tokenizer)} entries, expected {rows}")
    return tokenizer


def random_checkpoint(out: Path, preset_name: str, device, names: list[str]) -> tuple[Path, int]:
    """A checkpoint folder of ours with `preset_name`'s shapes and random weights (bf16), built on `device` (fast
    init) and saved from the CPU; returns it and its tokenizer's length."""
    import torch

    from lasagna.checkpoint import save_pretrained
    from lasagna.config import preset
    from lasagna.model.lasagna import LasagnaModel
    from lasagna.tokens import token_ids

    tokenizer = llama_shaped_tokenizer(out.parent / "tokenizer", names)
    cfg = preset(preset_name)
    cfg.llm.vocab_size = len(tokenizer)
    cfg.tokenization = "llama431"
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # why: a 7B fp32 build needs 28 GB on the device
    try:
        with torch.device(device):
            model = LasagnaModel(cfg, seed=0)
    finally:
        torch.set_default_dtype(default)
    ids = token_ids(tokenizer)
    model.set_token_ids(ids.ins, ids.pad, ids.no_ins)
    save_pretrained(model.cpu(), tokenizer, out, dtype=torch.bfloat16, overwrite=True)
    return out, len(tokenizer)


class Clock:
    """Wall seconds of a block, the device's queued work included."""

    def __init__(self, device):
        import torch

        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def __enter__(self):
        self.sync()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.sync()
        self.seconds = time.perf_counter() - self.start


def measure(folder: Path, setting: str, device, images: list[Path], timed: int, class_lists) -> dict[str, float]:
    """One row of the table."""
    import torch

    from lasagna.api import Lasagna
    from lasagna.infer.batch import segment_batch
    from lasagna.preprocess import to_rgb

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    with Clock(device) as load:
        api = Lasagna.from_pretrained(folder, device=device, **SETTINGS[setting])
    nan = float("nan")  # a CPU rehearsal has no GPU memory to report
    row = {"load s": load.seconds, "weights GiB": torch.cuda.memory_allocated(device) / 2**30 if cuda else nan}
    pixels = [to_rgb(path) for path in images[: timed + 1]]
    for n, names in class_lists.items():
        api.segment(pixels[0], classes=names, decoder="template")  # warm-up: kernels, allocator, caches
        with Clock(device) as clock:
            for image in pixels[1 : timed + 1]:
                api.segment(image, classes=names, decoder="template")
        row[f"s/image {n}"] = clock.seconds / timed
    names = class_lists[150]
    for batch in (1, 4):
        segment_batch(api.engine, [pixels[0]] * batch, [names] * batch, decoder="template")  # warm-up
        with Clock(device) as clock:
            for i in range(0, len(images), batch):
                group = [to_rgb(path) for path in images[i : i + batch]]
                segment_batch(api.engine, group, [names] * len(group), decoder="template")
        row[f"img/s batch {batch}"] = len(images) / clock.seconds
    row["peak GiB"] = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else nan
    del api
    gc.collect()
    return row


def write_images(folder: Path, count: int) -> list[Path]:
    """`count` ShapeWorld scenes as 640x480 PNGs: a folder of ordinary photos' size."""
    from PIL import Image

    from lasagna.shapeworld import ShapeWorldSemantic

    folder.mkdir(parents=True, exist_ok=True)
    source = ShapeWorldSemantic("test-open")
    paths = []
    for i in range(count):
        path = folder / f"scene-{i:03d}.png"
        Image.fromarray(source[i].load_image()).resize((640, 480), Image.NEAREST).save(path)
        paths.append(path)
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--work", type=Path, default=Path("/tmp/lasagna-gpu-check"), help="scratch folder (removed)")
    ap.add_argument("--preset", default="lasagna-7b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--settings", default="bf16,4bit", help=f"comma-separated, of {', '.join(SETTINGS)}")
    ap.add_argument("--images", type=int, default=16, help="images in the folder run")
    ap.add_argument("--timed", type=int, default=3, help="images timed for the per-image seconds")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (the 7B checkpoint: 14 GB)")
    args = ap.parse_args()
    start = time.perf_counter()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: torch {torch.__version__} sees no CUDA GPU; this check needs one", file=sys.stderr)
        return 3
    from lasagna.devices import resolve_device

    device = resolve_device(args.device)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown or args.images < 4 or args.timed < 1:
        ap.error(f"--settings of {list(SETTINGS)} (got {unknown}); --images >= 4; --timed >= 1")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from inference import class_list

    class_lists = {n: class_list(n) for n in (20, 150)}
    work = args.work.resolve()
    try:
        with Clock(device) as build:
            folder, rows = random_checkpoint(work / "model", args.preset, device, class_lists[150])
        if device.type == "cuda":
            torch.cuda.empty_cache()
        images = write_images(work / "images", max(args.images, args.timed + 1))
        gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        print(f"\n{args.preset} shapes, random weights, tokenizer of {rows} entries; {gpu}; torch {torch.__version__}")
        print(f"checkpoint built and saved in {build.seconds:.0f} s; template decoding, chunks of 16\n")
        results = {s: measure(folder, s, device, images[: args.images], args.timed, class_lists) for s in settings}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    columns = list(next(iter(results.values())))
    print("| setting | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for setting, row in results.items():
        print(f"| {setting} | " + " | ".join(f"{row[c]:.2f}" for c in columns) + " |")
    print(f"\ngpu_check.py: {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
