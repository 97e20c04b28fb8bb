"""Damaged checkpoint folders: each error names the file at fault and what is wrong with it."""

import json
import shutil

import pytest

from lasagna.api import Lasagna, default_model_dir
from lasagna.checkpoint import CheckpointError


@pytest.fixture
def folder(tmp_path):
    """A copy of the embedded model to damage."""
    return shutil.copytree(default_model_dir(), tmp_path / "model")


def test_a_truncated_weights_file_is_named(folder):
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"model.safetensors is not a readable safetensors file"):
        Lasagna.from_pretrained(folder)


def test_a_weights_file_whose_header_claims_too_much_is_named(folder):
    (folder / "model.safetensors").write_bytes((2**40).to_bytes(8, "little") + b"{}")
    with pytest.raises(CheckpointError, match=r"model.safetensors is not a readable safetensors file"):
        Lasagna.from_pretrained(folder)


def test_random_bytes_as_weights_are_named(folder):
    (folder / "model.safetensors").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        Lasagna.from_pretrained(folder)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"format": "lasagna", "format_version": 7, "model": {}}'])
def test_a_broken_config_is_named(folder, text):
    (folder / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match=r"config\.json"):
        Lasagna.from_pretrained(folder)


def test_a_config_field_of_the_wrong_type_is_named(folder):
    header = json.loads((folder / "config.json").read_text())
    header["model"]["llm"]["hidden_size"] = "big"
    (folder / "config.json").write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match=r"config.json: config.model.llm.hidden_size: expected int, got 'big'"):
        Lasagna.from_pretrained(folder)


def test_a_broken_or_missing_tokenizer_is_named(folder):
    (folder / "tokenizer.json").write_text("{truncated")
    with pytest.raises(CheckpointError, match=r"tokenizer.json is not valid JSON"):
        Lasagna.from_pretrained(folder)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match=r"has no tokenizer: none of \['tokenizer.json', 'tokenizer.model'\]"):
        Lasagna.from_pretrained(folder)


def test_a_missing_folder_or_weights_are_named(tmp_path, folder):
    with pytest.raises(FileNotFoundError, match="checkpoint folder not found"):
        Lasagna.from_pretrained(tmp_path / "nowhere")
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"has neither model.safetensors nor model.safetensors.index.json"):
        Lasagna.from_pretrained(folder)


def test_an_index_naming_a_file_outside_the_folder_is_refused(folder):
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "../../etc/passwd"}}))
    with pytest.raises(CheckpointError, match="names a weights file that is not in"):
        Lasagna.from_pretrained(folder)
