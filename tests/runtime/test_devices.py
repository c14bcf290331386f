"""Device, precision and stitching choices of inference (CUDA paths decided without a GPU)."""

from __future__ import annotations

import pytest
import torch

from pe_segmentation.config import Config
from pe_segmentation.errors import ConfigError
from pe_segmentation.runtime.devices import (
    inference_device,
    inference_precision,
    stitch_device,
    visible_devices,
)
from pe_segmentation.runtime.inferer import build_inferer

CPU = torch.device("cpu")
GPU = torch.device("cuda", 0)


@pytest.mark.parametrize(("native", "expected"), [("1", "bf16"), ("0", "fp32")])
def test_auto_on_cpu_takes_bf16_only_with_native_support(monkeypatch, native, expected):
    monkeypatch.setenv("PE_SEG_CPU_BF16", native)
    precision = inference_precision("auto", CPU)
    assert precision.name == expected
    assert precision.device_type == "cpu"


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16"), (False, "fp16")])
def test_auto_on_cuda_prefers_bf16_where_the_gpu_has_it(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    precision = inference_precision("auto", GPU)
    assert precision.name == expected
    assert precision.device_type == "cuda"


def test_explicit_precisions(monkeypatch):
    monkeypatch.setenv("PE_SEG_CPU_BF16", "1")
    assert inference_precision("fp32", CPU).dtype is None
    assert inference_precision("bf16", CPU).dtype == torch.bfloat16
    assert inference_precision("fp32", GPU).name == "fp32"
    assert inference_precision("FP16", GPU).dtype == torch.float16
    with pytest.raises(ConfigError, match=r"--precision: fp16 needs a CUDA device"):
        inference_precision("fp16", CPU)
    with pytest.raises(ConfigError, match="--precision"):
        inference_precision("fp8", CPU)


def test_bf16_on_a_cpu_without_it_still_runs_but_warns(monkeypatch, caplog):
    monkeypatch.setenv("PE_SEG_CPU_BF16", "0")
    assert inference_precision("bf16", CPU).name == "bf16"
    assert "no native bf16" in caplog.text


def test_devices(monkeypatch):
    assert inference_device("cpu") == CPU
    assert visible_devices("cpu") == [CPU]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert inference_device("auto") == CPU
    with pytest.raises(ConfigError, match="--device: cuda asked for"):
        inference_device("cuda")
    with pytest.raises(ConfigError, match="--device"):
        inference_device("gpu0")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert visible_devices("cuda") == [torch.device("cuda", i) for i in range(3)]  # one worker per GPU
    assert visible_devices("auto") == [torch.device("cuda", i) for i in range(3)]
    assert visible_devices("cuda:2") == [torch.device("cuda", 2)]
    with pytest.raises(ConfigError, match="only 3 GPU"):
        inference_device("cuda:3")


def test_the_volume_stays_on_the_gpu_only_when_it_fits():
    voxels = 400 * 300 * 300
    needed = 4 * voxels * 3
    assert stitch_device(CPU, voxels) == CPU
    assert stitch_device(GPU, voxels, free_bytes=4 * needed) == GPU
    assert stitch_device(GPU, voxels, free_bytes=int(1.5 * needed)) == CPU  # windows on GPU, volume on host
    assert stitch_device(GPU, voxels, channels=2, free_bytes=2 * needed) == CPU


def test_inferer_options():
    config = Config.from_dict({"patch": {"patch_size": [16, 16, 16]}})
    inferer = build_inferer(config, 0.5, 3, sw_device="cpu", device="cpu")
    assert inferer.roi_size == (16, 16, 16)
    assert inferer.overlap == 0.5
    assert inferer.sw_batch_size == 3
    assert inferer.mode == "gaussian"
    assert inferer.device == "cpu"
    assert build_inferer(config, roi_size=(8, 8, 8)).roi_size == (8, 8, 8)
    for kwargs, message in (
        ({"overlap": 1.0}, "overlap"),
        ({"sw_batch_size": 0}, "sw_batch"),
        ({"roi_size": (8, 8)}, "roi"),
    ):
        with pytest.raises(ValueError, match=message):
            build_inferer(config, **kwargs)
