"""`lasagna data preview` on the user formats, and the paper's strategies as flags whose effect shows in the text."""

from __future__ import annotations

import json
import re

import pytest

from lasagna.cli import main
from user_data import write_coco_file, write_folder_tree, write_jsonl_file

NAMES = ["kiwi", "plum", "quince", "lime", "fig", "date"]


def _preview(capsys, *args: str) -> list[dict]:
    assert main(["data", "preview", *args]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def _question_names(question: str) -> list[str]:
    return re.search(r"<cat_start> (.*) <cat_end>", question)[1].split(", ")


def _answer_items(answer: str) -> list[tuple[str, str]]:
    return re.findall(r"([^<>]+?)(<ins>|<no_ins>)", answer)


@pytest.fixture
def six_classes(tmp_path):
    return write_folder_tree(tmp_path / "fruit", classes=NAMES)


def test_the_three_formats_preview(tmp_path, capsys):
    folder = write_folder_tree(tmp_path / "folder")
    coco = write_coco_file(tmp_path / "coco")
    jsonl = write_jsonl_file(tmp_path / "jsonl")
    lines = _preview(capsys, "--dataset", "folder", "--root", str(folder), "--n", "2")
    assert lines and all(line["num_masks"] == line["answer"].count("<ins>") for line in lines)
    lines = _preview(capsys, "--dataset", "coco", "--root", str(coco.parent), "--option", "background=null")
    assert all("background" not in _question_names(line["question"]) for line in lines)
    lines = _preview(capsys, "--dataset", "coco-referring", "--root", str(coco))
    assert {line["image"] for line in lines} >= {"photo0.jpg"}
    lines = _preview(capsys, "jsonl", "--root", str(jsonl.parent), "--n", "1")
    assert {line["classes_absent"][0] for line in lines if line["classes_absent"]} == {"the quince"}


def test_negatives_flag(six_classes, capsys):
    with_negatives = _preview(capsys, "--dataset", "folder", "--root", str(six_classes), "--n", "4")
    without = _preview(capsys, "--dataset", "folder", "--root", str(six_classes), "--n", "4", "--no-negatives")
    assert any("<no_ins>" in line["answer"] for line in with_negatives)
    assert not any("<no_ins>" in line["answer"] for line in without)
    for line in without:  # the question still lists absent classes; the answer speaks only of present ones
        assert [name for name, _ in _answer_items(line["answer"])] == line["classes_present"]


def test_class_list_and_answer_order_flags(six_classes, capsys):
    root = ["--dataset", "folder", "--root", str(six_classes), "--n", "4"]
    for line in _preview(capsys, *root, "--class-list", "full"):
        assert sorted(_question_names(line["question"])) == sorted(NAMES)
    for line in _preview(capsys, *root, "--answer-order", "question"):
        asked = _question_names(line["question"])
        answered = [name for name, _ in _answer_items(line["answer"])]
        assert answered == [name for name in asked if name in answered]
    shuffled = []
    for seed in range(6):
        for line in _preview(
            capsys, *root, "--answer-order", "shuffled", "--list-length", "4", "4", "--seed", str(seed)
        ):
            asked = _question_names(line["question"])
            shuffled.append([name for name, _ in _answer_items(line["answer"])] != asked)
    assert any(shuffled)


def test_list_sampling_and_single_class_flags(six_classes, capsys):
    root = ["--dataset", "folder", "--root", str(six_classes), "--n", "4"]
    for line in _preview(capsys, *root, "--list-sampling", "frequency", "--list-length", "3", "3"):
        assert len(_question_names(line["question"])) == 3
    lines = _preview(capsys, *root, "--single-class")
    assert lines and all(line["answer"] == "<ins>" and "<cat_start>" not in line["question"] for line in lines)


def test_bad_dataset_arguments_are_errors(tmp_path, capsys):
    assert main(["data", "preview"]) == 2
    assert "name a dataset" in capsys.readouterr().err
    assert main(["data", "preview", "folder", "--dataset", "coco"]) == 2
    assert main(["data", "preview", "--dataset", "folder", "--root", str(tmp_path), "--option", "nokey"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
