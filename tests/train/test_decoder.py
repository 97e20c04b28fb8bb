import pytest
import torch
from safetensors.torch import load_file, save_file

from lasagna.config import preset
from lasagna.losses import LossConfig
from lasagna.model.lasagna import LasagnaModel
from lasagna.train import decoder as dec
from lasagna.train.config import load_train_config
from lasagna.train.decoder import DecoderPretrainConfig, pretrain_decoder
from lasagna.train.fit import fit

_DECODER = ("sam.prompt_encoder.", "sam.mask_decoder.", "sam.stem_skips.")


def _skips_model() -> LasagnaModel:
    torch.manual_seed(0)
    cfg = preset("tiny")
    cfg.sam.conv_stem, cfg.sam.stem_skips = [4, 8, 8], True
    return LasagnaModel(cfg)


def test_decoder_pretraining_changes_only_the_decoder_saves_it_and_leaves_the_rng_alone(tmp_path):
    model = _skips_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    cfg = DecoderPretrainConfig(steps=2, batch_size=2, warmup_steps=1)
    summary = pretrain_decoder(model, cfg, LossConfig(), 32, 0, tmp_path, bf16=False, progress=False)
    assert torch.equal(torch.get_rng_state(), rng)
    assert summary["steps"] == 2 and summary["loss"] > 0
    assert 0 <= summary["val_stuff_iou"] <= 1 and 0 <= summary["val_shape_iou"] <= 1
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("sam.stem_skips.") for k in changed)
    assert any(k.startswith("sam.mask_decoder.") for k in changed)
    assert changed and all(k.startswith(_DECODER) for k in changed)

    fresh = _skips_model()
    dec.load_decoder(fresh, tmp_path / dec.DECODER_FILE)
    assert all(torch.equal(v, after[k]) for k, v in fresh.state_dict().items() if k.startswith(_DECODER))


def test_loading_a_decoder_without_the_skips_names_the_missing_keys(tmp_path):
    plain = LasagnaModel(preset("tiny"))
    dec.save_decoder(plain, tmp_path, {})
    with pytest.raises(ValueError, match="stem_skips"):
        dec.load_decoder(_skips_model(), tmp_path / dec.DECODER_FILE)
    with pytest.raises(FileNotFoundError, match="decoder weights not found"):
        dec.load_decoder(plain, tmp_path / "absent.safetensors")


def test_fit_starts_from_a_decoder_file(tmp_path):
    model = _skips_model()
    with torch.no_grad():
        model.sam.stem_skips.fine.weight.fill_(0.25)
    dec.save_decoder(model, tmp_path, {})
    overrides = [
        f"out_dir={tmp_path / 'run'}",
        "model_preset=tiny",
        "model_overrides={sam.conv_stem: [4, 8, 8], sam.stem_skips: true}",
        "tokenizer_vocab=300",
        "tokenizer_corpus=20",
        "data.image_size=32",
        "optim.batch_size=1",
        "optim.steps=1",
        "optim.lr=0",
        "eval.limit=0",
        "bf16=false",
        f"decoder.from_file={tmp_path / dec.DECODER_FILE}",
    ]
    final = fit(load_train_config(None, overrides))
    weights = load_file(str(final / "model.safetensors"))
    assert torch.all(weights["sam.stem_skips.fine.weight"] == 0.25)


def test_a_part_loads_from_a_whole_checkpoint_file_cast_to_the_model_dtype(tmp_path):
    source = _skips_model()
    with torch.no_grad():
        source.sam.mask_decoder.iou_token.weight.fill_(0.5)
    whole = tmp_path / "model.safetensors"
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in source.state_dict().items()}, str(whole))
    target = _skips_model()
    llm_before = {k: v.clone() for k, v in target.state_dict().items() if k.startswith("llm.")}
    dec.load_decoder(target, whole)
    assert target.sam.mask_decoder.iou_token.weight.dtype == torch.float32
    assert torch.all(target.sam.mask_decoder.iou_token.weight == 0.5)
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in llm_before.items())

    save_file({"llm.x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="holds no decoder weights"):
        dec.load_decoder(target, tmp_path / "other.safetensors")
