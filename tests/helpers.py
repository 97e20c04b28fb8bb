"""Shared test builders (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch
from PIL import Image

from lasagna.config import preset
from lasagna.model.lasagna import LasagnaInputs, LasagnaModel
from lasagna.tokens import IMAGE_TOKEN_ID, token_ids

# A tiny training run: overrides of the default training config that take seconds.
TINY = [
    "model_preset=tiny",
    "tokenizer_vocab=300",
    "tokenizer_corpus=40",
    "data.image_size=64",
    "optim.batch_size=2",
    "optim.grad_accum=2",
    "optim.warmup_steps=1",
    "optim.steps=4",
    "save_every=2",
    "keep_last=3",
    "eval.limit=0",
    "bf16=false",
]


def make_inputs(rows: list[list[int]], image_index: list[int], sizes: list[tuple[int, int]], ins_id: int = 10):
    """A hand-made batch; rows use IMAGE_TOKEN_ID for the image and 0 for padding."""
    length = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (length - len(r)) for r in rows])
    cfg = preset("tiny")
    g = torch.Generator().manual_seed(1)
    n_img = len(sizes)
    return LasagnaInputs(
        input_ids=ids,
        attention_mask=(ids != 0).long(),
        image_index=torch.tensor(image_index),
        clip_pixels=torch.randn(n_img, 3, cfg.preprocess.clip_size, cfg.preprocess.clip_size, generator=g),
        sam_pixels=torch.randn(n_img, 3, cfg.preprocess.sam_size, cfg.preprocess.sam_size, generator=g),
        resize_sizes=[(cfg.preprocess.sam_size, cfg.preprocess.sam_size)] * n_img,
        original_sizes=sizes,
        labels=ids.masked_fill((ids == 0) | (ids == IMAGE_TOKEN_ID), -100),
    )


def decisive_model(tokenizer, seed: int) -> LasagnaModel:
    """An untrained tiny model whose free decoding emits `<ins>` and `<no_ins>` (at random) instead of never."""
    torch.manual_seed(seed)
    cfg = preset("tiny")
    cfg.llm.vocab_size = len(tokenizer)
    model = LasagnaModel(cfg).eval()
    ids = token_ids(tokenizer)
    model.set_token_ids(ids.ins, ids.pad)
    with torch.no_grad():  # why: larger decision logits make a random model choose them often
        head = model.llm.get_output_embeddings().weight
        head[ids.ins] *= 4
        head[ids.no_ins] *= 4
    return model


RELEASED_ORDER = ("<cat_start>", "<cat_end>", "<semantic>", "<ins>", "<no_ins>", "<im_start>", "<im_end>")


def write_released_layout(folder: Path, legacy: bool | None = True) -> int:
    """tokenizer_config.json / special_tokens_map.json / added_tokens.json as 4.31's save_pretrained wrote them
    beside a tokenizer.model; the LaSagnA tokens get ids vocab..vocab+6. Returns the tokenizer's length."""
    vocab = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model")).get_piece_size()
    (folder / "added_tokens.json").write_text(json.dumps({t: vocab + i for i, t in enumerate(RELEASED_ORDER)}))

    def special(content):
        return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": False, "rstrip": False}

    specials = {"bos_token": special("<s>"), "eos_token": special("</s>"), "unk_token": special("<unk>")}
    (folder / "special_tokens_map.json").write_text(json.dumps({**specials, "pad_token": "<unk>"}))
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "model_max_length": 1024,
        "padding_side": "right",
        "pad_token": None,
        "clean_up_tokenization_spaces": False,
        **specials,
    }
    if legacy is not None:
        config["legacy"] = legacy
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return vocab + len(RELEASED_ORDER)


def write_released_tokenizer(folder: Path, lines: list[str], vocab_size: int) -> int:
    """Train a tiny sentencepiece BPE with LLaMA's settings offline and lay it out like the release."""
    (folder / "train.txt").write_text("\n".join(lines))
    spm.SentencePieceTrainer.train(
        input=str(folder / "train.txt"),
        model_prefix=str(folder / "tokenizer"),
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=False,
        character_coverage=1.0,
        normalization_rule_name="identity",  # LLaMA's settings: no normalisation, keep repeated spaces
        remove_extra_whitespaces=False,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    (folder / "train.txt").unlink()
    (folder / "tokenizer.vocab").unlink()
    return write_released_layout(folder)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_two_processes(cli_args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node=2 -m lasagna.cli ARGS` on CPU (gloo), one thread each, on a free port."""
    port = _free_port()  # 0 makes torchrun's rendezvous wait forever
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={port}",
        "-m",
        "lasagna.cli",
        *cli_args,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def launch_deepspeed(launch_config: Path, cli_args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file LAUNCH -m lasagna.cli ARGS` on a free port."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(launch_config)]
    cmd = [*launch, f"--main_process_port={port}", "-m", "lasagna.cli", *cli_args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def failed_run(done: subprocess.CompletedProcess) -> str:
    """The assertion message for a failed torchrun: the whole stderr, since the first failing rank's traceback comes
    well before torchrun's own summary."""
    return f"exit code {done.returncode}\n--- stderr ---\n{done.stderr}\n--- stdout ---\n{done.stdout[-2000:]}"


def add_judges(lasagna, seed: int = 0, **flags: bool):
    """Give a loaded `Lasagna` fresh judges (`lasagna.judges`) where it lacks them, as `train-verifier` does."""
    from lasagna.config import JudgesConfig
    from lasagna.judges import Judges

    if lasagna.judges is None:
        lasagna.judges = Judges.for_model(lasagna.model, JudgesConfig())
        lasagna.engine.judge = lasagna.judges
    lasagna.judges.add(JudgesConfig(**flags), seed=seed)
    return lasagna.judges


SEGMENT_CLASSES = "wall, bed, sky, red circle, tree"
"""A class list the tiny test tokenizer knows."""


def write_scenes(folder: Path, count: int = 8) -> list[Path]:
    """`count` small images of a few sizes (every third in a subfolder `sub/`), coloured blocks on noise."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        height, width = (24, 32) if i % 2 else (30, 20)
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        pixels[: height // 2, : width // 2] = rng.integers(0, 255, 3, dtype=np.uint8)
        path = folder / ("sub" if i % 3 == 2 else "") / f"img{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths
