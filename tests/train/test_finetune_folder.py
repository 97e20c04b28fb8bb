"""configs/train/finetune-folder.yaml: a tiny checkpoint fine-tuned on a folder tree of class names it never saw."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from lasagna.api import Lasagna
from lasagna.checkpoint import save_pretrained
from lasagna.cli import main
from lasagna.data.mixture import Mixture, MixtureConfig
from lasagna.train.config import load_train_config
from lasagna.train.fit import fit
from lasagna.train.setup import build_model_and_tokenizer, training_sources
from user_data import LAYOUT, scene, write_coco_file, write_folder_tree, write_jsonl_file

RECIPE = Path(__file__).parents[2] / "configs" / "train" / "finetune-folder.yaml"
NEW_NAMES = ["kiwi", "plum", "quince"]  # not in the ShapeWorld vocabulary the base tokenizer was fitted on
BASE = ["model_preset=tiny", "tokenizer_vocab=300", "tokenizer_corpus=40", "data.image_size=64", "bf16=false"]
STEPS = 200


@pytest.fixture(autouse=True)
def _fresh_accelerator_state():
    """accelerate keeps one state per process; each fit() here may ask for its own mixed precision."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()


def _base_model(tmp_path: Path) -> Path:
    """A tiny checkpoint of ours (random weights, a ShapeWorld tokenizer), as `lasagna convert official` writes one."""
    torch.manual_seed(0)
    model, tokenizer = build_model_and_tokenizer(load_train_config(None, [f"out_dir={tmp_path}/scratch", *BASE]))
    return save_pretrained(model, tokenizer, tmp_path / "base")


def test_finetune_folder_recipe_learns_new_class_names(tmp_path):
    tree = write_folder_tree(tmp_path / "fruit", classes=NEW_NAMES)
    overrides = [
        f"out_dir={tmp_path / 'run'}",
        f"init_from={_base_model(tmp_path)}",
        f"data.sources.folder.root={tree}",
        f"optim.steps={STEPS}",
        "optim.warmup_steps=2",
        "optim.lr=0.003",
        "bf16=false",
        "log_every=1",
        f"save_every={STEPS}",
        # why: the base here has random weights, unlike a real init_from; the paper's LoRA-only recipe would need far
        # more than a test's steps to teach it anything, its whole LLM and projector learn the names in 200
        "trainable.lora_r=0",
        "trainable.llm_full=true",
        "trainable.image_projector=true",
        "data.mixture.tasks.semantic.list_length=[3, 3]",  # every answer speaks of all three names
    ]
    final = fit(load_train_config(RECIPE, overrides))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == STEPS
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10]), losses

    lasagna = Lasagna.from_pretrained(final)
    for held in LAYOUT:  # the training photos: each new name answered, <ins> exactly for the classes a photo holds
        image, _ = scene(held)
        pred = lasagna.segment(image, classes=NEW_NAMES, decoder="template")
        expected = [f"{name}{'<ins>' if k in held else '<no_ins>'}" for k, name in enumerate(NEW_NAMES)]
        assert pred.text.split() == expected, (held, pred.text)
        free = lasagna.segment(image, classes=NEW_NAMES, decoder="free")  # the model writes the names itself
        items = re.findall(r"(\S+?)(<ins>|<no_ins>)", free.text)
        assert items and {name for name, _ in items} <= set(NEW_NAMES), free.text


def test_every_user_format_trains_in_one_mixture_and_evaluates(tmp_path, capsys):
    folder = write_folder_tree(tmp_path / "folder", classes=NEW_NAMES)
    coco = write_coco_file(tmp_path / "coco")
    jsonl = write_jsonl_file(tmp_path / "jsonl")
    roots = {"folder": folder, "coco": coco, "coco-referring": coco, "jsonl": jsonl}
    sources = json.dumps({name: {"root": str(root)} for name, root in roots.items()})  # JSON is YAML too
    weights = {"semantic": {"folder": 1.0, "coco": 1.0}, "referring": {"coco-referring": 1.0, "jsonl": 1.0}}
    overrides = [
        f"out_dir={tmp_path / 'run'}",
        f"init_from={_base_model(tmp_path)}",
        f"data.sources={sources}",
        "data.mixture.task_weights={semantic: 1.0, referring: 1.0}",
        f"data.mixture.dataset_weights={json.dumps(weights)}",
        "optim.steps=3",
        "optim.warmup_steps=1",
        "bf16=false",
        "save_every=3",
    ]
    mixture = Mixture(training_sources(load_train_config(RECIPE, overrides)), MixtureConfig(), seed=0, length=8)
    assert {name for _, named in mixture.weights.values() for name in named} == set(roots)
    assert main(["train", "--config", str(RECIPE), *overrides]) == 0
    final = tmp_path / "run" / "final"
    capsys.readouterr()
    for dataset, root in (("folder", folder), ("coco", coco.parent), ("coco-referring", coco), ("jsonl", jsonl)):
        out = tmp_path / f"eval-{dataset}.json"
        argv = ["eval", "--model", str(final), "--dataset", dataset, "--root", str(root), "--limit", "2"]
        assert main([*argv, "--out", str(out)]) == 0, capsys.readouterr().err
        report = json.loads(out.read_text())
        task = "semantic" if dataset in ("folder", "coco") else "referring"
        assert report[task]["images"] == 2
        assert ("mIoU" if task == "semantic" else "cIoU") in report[task]
