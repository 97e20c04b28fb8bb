"""Device, dtype and quantization requests: what this machine can give, and clear refusals of the rest (the GPU and
MPS answers are simulated by patching torch's probes)."""

from __future__ import annotations

import argparse
import sys

import pytest
import torch

from lasagna import devices
from lasagna.cli import main
from lasagna.devices import DeviceError, Placement, resolve, resolve_device, resolve_dtype, resolve_quantize


@pytest.fixture
def no_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)


def test_auto_is_cpu_without_an_accelerator_and_cpu_always_works(no_accelerator):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve() == Placement(torch.device("cpu"), None, None)


def test_auto_prefers_cuda_then_mps(two_gpus, monkeypatch):
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setenv("LOCAL_RANK", "1")  # a second process of torchrun takes the second GPU
    assert resolve_device("auto") == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")


def test_cuda_without_cuda_says_so(no_accelerator):
    with pytest.raises(DeviceError, match=r"sees no CUDA GPU.*--device cpu"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="'cuda:1'"):
        resolve_device("cuda:1")
    with pytest.raises(DeviceError, match="MPS backend is not available"):
        resolve_device("mps")


def test_a_gpu_index_past_the_last_is_refused(two_gpus):
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match="there are 2 CUDA GPU"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("name", ["gpu", "tpu", "", "meta", 3])
def test_unknown_devices_are_named(name, no_accelerator):
    with pytest.raises(DeviceError, match="device"):
        resolve_device(name)


def test_dtype_names_and_torch_dtypes():
    assert resolve_dtype(None) is None
    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype("BFloat16") is torch.bfloat16
    assert resolve_dtype("torch.float16") is torch.float16 and resolve_dtype("half") is torch.float16
    assert resolve_dtype(torch.float32) is torch.float32 and resolve_dtype("fp32") is torch.float32
    for bad in ("int8", "fp8", torch.int8, torch.float64, 16):
        with pytest.raises(DeviceError, match="fp32, bf16, fp16"):
            resolve_dtype(bad)


def test_quantize_names():
    assert resolve_quantize(None) is None
    assert resolve_quantize("8BIT") == "8bit" and resolve_quantize("int8") == "8bit"
    assert resolve_quantize("nf4") == "4bit"
    with pytest.raises(DeviceError, match="8bit, 4bit"):
        resolve_quantize("3bit")


def test_bf16_on_a_gpu_without_it_points_to_fp16(two_gpus, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    with pytest.raises(DeviceError, match=r"'Tesla T4'.*--dtype fp16"):
        resolve("cuda", "bf16")
    assert resolve("cuda", "fp16").dtype is torch.float16


def test_quantize_on_mps_is_refused(monkeypatch):
    monkeypatch.setattr(devices, "_mps_available", lambda: True)
    with pytest.raises(DeviceError, match="bitsandbytes has no MPS backend"):
        resolve("mps", quantize="4bit")
    assert resolve("mps", "fp16").device == torch.device("mps")


def test_quantize_without_bitsandbytes_names_the_extra(monkeypatch, no_accelerator):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # makes `import bitsandbytes` fail
    with pytest.raises(DeviceError, match=r"pip install 'lasagna\[quantize\]'"):
        resolve("cpu", quantize="8bit")
    from lasagna import Lasagna

    with pytest.raises(DeviceError, match="bitsandbytes"):  # refused before any weight is read
        Lasagna.from_pretrained("/nonexistent", quantize="4bit")


def test_arguments_become_from_pretrained_options(no_accelerator):
    parser = argparse.ArgumentParser()
    devices.add_arguments(parser)
    args = parser.parse_args([])
    assert devices.load_options(args) == {"device": "auto", "dtype": None, "quantize": None}
    options = devices.load_options(parser.parse_args(["--device", "cpu", "--dtype", "bf16"]))
    assert resolve(**options) == Placement(torch.device("cpu"), torch.bfloat16, None)
    with pytest.raises(SystemExit):
        parser.parse_args(["--quantize", "2bit"])
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        resolve(**devices.load_options(parser.parse_args(["--device", "cuda"])))


def test_commands_refuse_a_missing_gpu_in_one_line(no_accelerator, capsys, tmp_path):
    argv = ["--dataset", "shapeworld", "--limit", "1", "--out", str(tmp_path / "r.json"), "--device", "cuda"]
    assert main(["eval", *argv]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "Traceback" not in err and not (tmp_path / "r.json").exists()
    out = tmp_path / "seg"
    assert main(["segment", "examples/shapes.png", "--classes", "sky", "--out", str(out), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "Traceback" not in err and not (out / "shapes").exists()


def test_the_api_loads_on_the_device_and_dtype_asked(no_accelerator):
    from lasagna import Lasagna

    model = Lasagna.from_pretrained(device="cpu", dtype="fp16")
    info = model.info()
    assert info["dtype"] == "float16" and info["device"] == "cpu" and info["quantize"] is None
    assert {p.dtype for p in model.model.parameters()} == {torch.float16}
