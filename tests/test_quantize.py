"""8-bit and 4-bit loading through bitsandbytes (its CPU kernels): the layers swapped, their storage as predicted,
strict loading kept, and the embedded model's answers close to fp32's. Skipped where bitsandbytes is not importable."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lasagna.checkpoint import CheckpointError
from lasagna.quantize import QuantizeError, load_bitsandbytes, quantize_linears, quantized_bytes, stored_bytes

try:
    bnb = load_bitsandbytes()
except QuantizeError as err:
    pytest.skip(f"bitsandbytes is not importable here: {err}", allow_module_level=True)

from lasagna import Lasagna

IMAGE = "examples/shapes.png"


def _classes() -> list[str]:
    with open("examples/shapes-classes.txt") as f:
        return [line.strip() for line in f if line.strip()]


@pytest.fixture(scope="module")
def fp32_answer():
    return Lasagna.from_pretrained(device="cpu", dtype="fp32").segment(IMAGE, classes=_classes())


@pytest.mark.parametrize("mode", ["8bit", "4bit"])
@pytest.mark.parametrize("shape", [(64, 128), (96, 200), (688, 256)])
def test_storage_is_what_the_memory_table_counts(mode, shape):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(shape[1], shape[0], bias=False))
    x = torch.randn(3, shape[1])
    want = net(x)
    assert quantize_linears(net, mode, torch.device("cpu"), torch.float32) == 1
    assert stored_bytes(net) == quantized_bytes(*shape, mode)
    err = (net(x) - want).abs().max() / want.abs().max()
    assert err < (0.02 if mode == "8bit" else 0.15), err


def test_unknown_modes_are_refused():
    with pytest.raises(QuantizeError, match="8bit, 4bit"):
        quantize_linears(nn.Linear(4, 4), "2bit", torch.device("cpu"), torch.float32)
    with pytest.raises(QuantizeError, match="known"):
        quantized_bytes(4, 4, "fp8")


@pytest.mark.parametrize("mode", ["8bit", "4bit"])
def test_the_embedded_model_segments_close_to_fp32(mode, fp32_answer):
    model = Lasagna.from_pretrained(device="cpu", dtype="fp32", quantize=mode)
    llm = model.model.llm
    layer = llm.get_decoder().layers[0]
    kind = bnb.nn.Linear8bitLt if mode == "8bit" else bnb.nn.Linear4bit
    assert isinstance(layer.self_attn.q_proj, kind) and isinstance(layer.mlp.down_proj, kind)
    assert type(llm.get_output_embeddings()) is nn.Linear and llm.get_output_embeddings().weight.dtype == torch.float32
    assert llm.get_input_embeddings().weight.dtype == torch.float32
    assert {p.dtype for p in [*model.model.vision_tower.parameters(), *model.model.sam.parameters()]} == {torch.float32}
    info = model.info()
    assert info["quantize"] == mode and info["parameters"] == Lasagna.from_pretrained(device="cpu").info()["parameters"]

    pred = model.segment(IMAGE, classes=_classes())
    assert pred.present == fp32_answer.present
    for ref, got in zip(fp32_answer.classes, pred.classes, strict=True):
        if ref.mask is not None:
            iou = (ref.mask & got.mask).sum() / (ref.mask | got.mask).sum()
            assert iou > 0.95, (ref.name, iou)


def test_loading_stays_strict(tmp_path):
    src = Lasagna.from_pretrained(device="cpu").folder
    folder = tmp_path / "ckpt"
    shutil.copytree(src, folder)
    state = load_file(folder / "model.safetensors")
    state["llm.model.layers.0.mlp.extra.weight"] = torch.zeros(2, 2)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"unexpected \(1\): llm.model.layers.0.mlp.extra.weight"):
        Lasagna.from_pretrained(folder, device="cpu", quantize="4bit")
