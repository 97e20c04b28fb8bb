"""Training gives the numbers it gave before the stages shared one step loop (`train/loop.py`).

The constants were written by the code of commit 3d6f87a (each stage with its own loop), run in float32 on the tiny
configs below: per weight group, the float64 sum and absolute sum of the trained weights, and the logged losses. A
change to the order of what happens in a step (drawing, autocast, backward, clipping, stepping) moves them.
"""

import json

import pytest
import torch
from accelerate.state import AcceleratorState

from lasagna.config import preset
from lasagna.losses import LossConfig
from lasagna.model.lasagna import LasagnaModel
from lasagna.train.config import load_train_config
from lasagna.train.decoder import DecoderPretrainConfig, pretrain_decoder
from lasagna.train.encoders import EncoderPretrainConfig, pretrain_encoders
from lasagna.train.fit import fit

ENCODERS = {
    "vision_tower.": (200.7885836322027, 1723.9456693893526),
    "sam.image_encoder.": (1174.5190216362535, 1342.008856965229),
}
DECODER = {
    "sam.prompt_encoder.": (54.64616514113732, 657.3170862726402),
    "sam.mask_decoder.": (312.6716805882643, 3955.5557247989163),
    "sam.stem_skips.": (0.04441162815783173, 0.1195901669561863),
}
FIT_LOSSES = [  # (loss, ce, bce, dice) at steps 1-4
    (7.557767868041992, 5.701071739196777, 0.6895792484283447, 0.9550754427909851),
    (7.544561147689819, 5.727932691574097, 0.6902094185352325, 0.8724187016487122),
    (7.482177495956421, 5.721358060836792, 0.6891847848892212, 0.7648994326591492),
    (7.48256778717041, 5.6823906898498535, 0.6866119205951691, 0.853906661272049),
]


def _sums(model: torch.nn.Module, prefixes) -> dict[str, tuple[float, float]]:
    state = model.state_dict()
    sums = {}
    for prefix in prefixes:
        weights = [v.double() for k, v in sorted(state.items()) if k.startswith(prefix)]
        sums[prefix] = (float(sum(t.sum() for t in weights)), float(sum(t.abs().sum() for t in weights)))
    return sums


def _assert_sums(model, expected) -> None:
    for prefix, sums in _sums(model, expected).items():
        assert sums == pytest.approx(expected[prefix], rel=1e-6, abs=1e-9), prefix


def test_encoder_pretraining_trains_the_encoders_as_before(tmp_path):
    torch.manual_seed(0)
    cfg = preset("tiny")
    cfg.vision.drop_cls, cfg.vision.feature_norm = False, True
    model = LasagnaModel(cfg)
    stage = EncoderPretrainConfig(
        steps=3, batch_size=2, warmup_steps=1, patch_classes=True, patch_ce=True, object_ce=True, eval_every=2
    )
    summary = pretrain_encoders(model, stage, 32, 0, tmp_path, bf16=False, progress=False)
    assert summary["loss"] == pytest.approx(19.544973373413086, rel=1e-6)
    _assert_sums(model, ENCODERS)


def test_decoder_pretraining_trains_the_decoder_as_before(tmp_path):
    torch.manual_seed(0)
    cfg = preset("tiny")
    cfg.sam.conv_stem, cfg.sam.stem_skips = [4, 8, 8], True
    model = LasagnaModel(cfg)
    stage = DecoderPretrainConfig(steps=3, batch_size=2, warmup_steps=1)
    summary = pretrain_decoder(model, stage, LossConfig(), 32, 0, tmp_path, bf16=False, progress=False)
    assert summary["loss"] == pytest.approx(1.7474143505096436, rel=1e-6)
    _assert_sums(model, DECODER)


def test_the_main_loop_logs_the_losses_it_logged_before(tmp_path):
    AcceleratorState._reset_state()
    overrides = [
        f"out_dir={tmp_path}",
        "model_preset=tiny",
        "tokenizer_vocab=300",
        "tokenizer_corpus=40",
        "data.image_size=32",
        "optim.batch_size=2",
        "optim.grad_accum=2",
        "optim.warmup_steps=1",
        "optim.steps=4",
        "save_every=2",
        "eval.limit=0",
        "log_every=1",
        "bf16=false",
    ]
    fit(load_train_config(None, overrides))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [(r["loss"], r["ce"], r["bce"], r["dice"]) for r in records if "loss" in r]
    assert len(logged) == len(FIT_LOSSES)
    for step, (got, want) in enumerate(zip(logged, FIT_LOSSES, strict=True), 1):
        assert got == pytest.approx(want, rel=1e-6), step
