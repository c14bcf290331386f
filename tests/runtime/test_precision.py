"""Device selection and autocast precision choice (CUDA paths checked with a mocked torch.cuda)."""

from __future__ import annotations

import pytest
import torch

from pe_segmentation.errors import ConfigError
from pe_segmentation.runtime import precision as precision_module
from pe_segmentation.runtime.precision import Precision, resolve_precision, select_device

CPU = torch.device("cpu")
CUDA = torch.device("cuda", 0)


@pytest.fixture
def fake_gpus(monkeypatch):
    """Pretend that ``n`` CUDA GPUs are visible (nothing touches a real GPU)."""

    def install(n: int, bf16: bool = True) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Fake GPU")

    return install


def test_device_selection_without_gpu(fake_gpus):
    fake_gpus(0)
    assert select_device("auto") == CPU
    assert select_device("cpu") == CPU
    with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
        select_device("cuda")
    with pytest.raises(ConfigError, match="expected auto, cpu, cuda or cuda:N"):
        select_device("tpu")


def test_device_selection_with_gpus(fake_gpus):
    fake_gpus(2)
    assert select_device("auto") == CUDA
    assert select_device("cuda:1") == torch.device("cuda", 1)
    assert select_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert select_device("cuda:0", local_rank=1) == torch.device("cuda", 1)  # each DDP process owns its GPU
    with pytest.raises(ConfigError, match="only 2 GPU"):
        select_device("cuda:2")


def test_precision_on_cpu(monkeypatch):
    monkeypatch.setenv("PE_SEG_CPU_BF16", "1")
    assert resolve_precision("auto", CPU) == Precision("bf16", "cpu")
    monkeypatch.setenv("PE_SEG_CPU_BF16", "0")
    assert resolve_precision("auto", CPU) == Precision("fp32", "cpu")
    assert resolve_precision("bf16", CPU).dtype is torch.bfloat16  # allowed, with a warning: emulated
    fp32 = resolve_precision("fp32", CPU)
    assert (fp32.dtype, fp32.uses_autocast, fp32.needs_grad_scaler) == (None, False, False)
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU)


def test_precision_on_cuda(fake_gpus):
    fake_gpus(1, bf16=False)
    auto = resolve_precision("auto", CUDA)
    assert (auto.name, auto.dtype, auto.needs_grad_scaler) == ("fp16", torch.float16, True)
    assert resolve_precision("fp32", CUDA).dtype is None
    with pytest.raises(ConfigError, match="Fake GPU has no bf16"):
        resolve_precision("bf16", CUDA)
    fake_gpus(1, bf16=True)
    bf16 = resolve_precision("bf16", CUDA)
    assert (bf16.dtype, bf16.needs_grad_scaler) == (torch.bfloat16, False)


def test_autocast_context_casts_matmuls_on_cpu():
    a = torch.randn(4, 4)
    with Precision("bf16", "cpu").autocast():
        assert (a @ a).dtype is torch.bfloat16
    with Precision("fp32", "cpu").autocast():
        assert (a @ a).dtype is torch.float32


def test_cpu_bf16_detection_is_a_bool(monkeypatch):
    monkeypatch.delenv("PE_SEG_CPU_BF16", raising=False)
    assert isinstance(precision_module.cpu_supports_bf16(), bool)
