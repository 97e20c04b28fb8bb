import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import make_inputs
from lasagna.checkpoint import (
    CheckpointError,
    load_pretrained,
    read_weights,
    save_part,
    save_pretrained,
    save_weights,
)
from lasagna.config import preset
from lasagna.model.lasagna import LasagnaModel
from lasagna.tokens import IMAGE_TOKEN_ID, token_ids
from lasagna.train.config import load_train_config


def _tiny(tokenizer):
    torch.manual_seed(0)
    cfg = preset("tiny")
    cfg.llm.vocab_size = len(tokenizer)
    model = LasagnaModel(cfg).eval()
    ids = token_ids(tokenizer)
    model.set_token_ids(ids.ins, ids.pad)
    return model, ids


def test_save_load_round_trip_is_bit_exact(tiny_tokenizer, tmp_path):
    model, ids = _tiny(tiny_tokenizer)
    out = save_pretrained(model, tiny_tokenizer, tmp_path / "ckpt")
    loaded, tokenizer = load_pretrained(out)
    assert tokenizer.get_vocab() == tiny_tokenizer.get_vocab()
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    batch = make_inputs([[1, IMAGE_TOKEN_ID, 5, ids.ins, 2]], [0], [(20, 24)], ins_id=ids.ins)
    with torch.no_grad():
        want, got = model(batch), loaded(batch)
    assert torch.equal(want.logits, got.logits)
    # SAM's kernels may reduce in another order for differently laid out (memory-mapped) weights
    torch.testing.assert_close(want.mask_logits[0], got.mask_logits[0], atol=1e-6, rtol=0)


def test_a_saved_model_has_the_modes_a_plain_create_gives_not_a_temporary_folder_s(tiny_tokenizer, tmp_path):
    import os

    model, _ = _tiny(tiny_tokenizer)
    mask = os.umask(0o022)
    try:
        out = save_pretrained(model, tiny_tokenizer, tmp_path / "ckpt")
        alone = save_part(model, tmp_path / "sam.safetensors", ("sam.",))
    finally:
        os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o755  # a temporary folder is 0700
    assert {f.name: f.stat().st_mode & 0o777 for f in out.iterdir()} == {f.name: 0o644 for f in out.iterdir()}
    assert alone.stat().st_mode & 0o777 == 0o644  # safetensors alone writes 0600


def test_add_grid_code_writes_a_model_that_answers_as_the_one_read(tiny_tokenizer, tmp_path):
    model, ids = _tiny(tiny_tokenizer)
    source = save_pretrained(model, tiny_tokenizer, tmp_path / "plain")
    script = Path(__file__).parents[1] / "tools" / "add_grid_code.py"
    command = [sys.executable, str(script), "--model", str(source), "--out", str(tmp_path / "grid"), "--width", "8"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    grown, _ = load_pretrained(tmp_path / "grid")
    assert grown.cfg.image_grid_code == 8 and not grown.image_grid.weight.any()
    batch = make_inputs([[1, IMAGE_TOKEN_ID, 5, ids.ins, 2]], [0], [(20, 24)], ins_id=ids.ins)
    with torch.no_grad():
        assert torch.equal(model(batch).logits, grown(batch).logits)
    twice = [sys.executable, str(script), "--model", str(tmp_path / "grid"), "--out", str(tmp_path / "twice")]
    refused = subprocess.run(twice, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "already has a grid code (8 wide)" in refused.stderr


def test_grow_llm_adds_layers_that_change_nothing_until_trained(tiny_tokenizer, tmp_path):
    model, ids = _tiny(tiny_tokenizer)
    source = save_pretrained(model, tiny_tokenizer, tmp_path / "plain")
    old = model.cfg.llm.num_hidden_layers
    script = Path(__file__).parents[1] / "tools" / "grow_llm.py"
    command = [sys.executable, str(script), "--model", str(source), "--out", str(tmp_path / "deep")]
    done = subprocess.run([*command, "--layers", str(old + 2)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    grown, _ = load_pretrained(tmp_path / "deep")
    assert grown.cfg.llm.num_hidden_layers == old + 2
    kept = grown.state_dict()
    assert all(torch.equal(value, kept[key]) for key, value in model.state_dict().items())
    drawn = LasagnaModel(grown.cfg, seed=0).llm.state_dict()  # what a model of the grown size starts from
    for key, value in grown.llm.state_dict().items():
        if key.startswith("model.layers.") and int(key.split(".")[2]) >= old:
            writes = key.endswith(("self_attn.o_proj.weight", "mlp.down_proj.weight"))
            assert torch.equal(value, torch.zeros_like(value) if writes else drawn[key]), key
    batch = make_inputs([[1, IMAGE_TOKEN_ID, 5, ids.ins, 2]], [0], [(20, 24)], ins_id=ids.ins)
    with torch.no_grad():
        want, got = model(batch), grown(batch)
    assert torch.equal(want.logits, got.logits)  # the new layers add exact zeros
    torch.testing.assert_close(want.mask_logits[0], got.mask_logits[0], atol=1e-6, rtol=0)
    again = subprocess.run([*command, "--layers", str(old)], capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and f"must exceed the {old} layers" in again.stderr


def test_strict_load_names_missing_and_unexpected_keys(tiny_tokenizer, tmp_path):
    model, _ = _tiny(tiny_tokenizer)
    out = save_pretrained(model, tiny_tokenizer, tmp_path / "ckpt")
    state = read_weights(out)
    state.pop("text_projector.0.weight")
    state["sam.extra.weight"] = torch.zeros(1)
    (out / "model.safetensors").unlink()
    save_weights(state, out)
    with pytest.raises(CheckpointError) as err:
        load_pretrained(out)
    assert "text_projector.0.weight" in str(err.value) and "sam.extra.weight" in str(err.value)


def test_sharded_weights_and_failed_saves_leave_nothing_half_written(tiny_tokenizer, tmp_path):
    model, _ = _tiny(tiny_tokenizer)
    out = save_pretrained(model, tiny_tokenizer, tmp_path / "sharded", max_shard_bytes=200_000)
    assert json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    loaded, _ = load_pretrained(out)
    pairs = zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)

    class Broken:
        def save_pretrained(self, path):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_pretrained(model, Broken(), tmp_path / "broken")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sharded"]
    with pytest.raises(FileExistsError):
        save_pretrained(model, tiny_tokenizer, out)


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_pretrained(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"config\.json"):
        load_pretrained(tmp_path / "empty")


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[1].glob("configs/*/*.yaml")), ids=lambda p: p.name)
def test_shipped_training_configs_load(path):
    if path.parent.name == "accelerate":
        pytest.skip("accelerate's own config format")
    load_train_config(path)


def test_bad_config_keys_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {lr: 0.1, lerning_rate: 3}\n")
    with pytest.raises(KeyError, match="lerning_rate"):
        load_train_config(bad)
    with pytest.raises(ValueError, match="not one of"):
        load_train_config(None, ["data.mixture.tasks.semantic.answer_order=sideways"])


def test_model_overrides_change_the_preset_strictly():
    from lasagna.config import preset
    from lasagna.train.setup import apply_overrides

    cfg = apply_overrides(preset("shapeworld-small"), {"vision.patch_size": 8, "llm.num_hidden_layers": 2})
    assert cfg.vision.patch_size == 8 and cfg.vision.num_features == 257 and cfg.llm.num_hidden_layers == 2
    with pytest.raises(KeyError, match=r"vision\.patch"):
        apply_overrides(preset("tiny"), {"vision.patch": 8})
    with pytest.raises(TypeError):
        apply_overrides(preset("tiny"), {"vision.patch_size": "eight"})
