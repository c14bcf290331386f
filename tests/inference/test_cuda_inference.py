"""Inference on a CUDA GPU: the same probabilities as on the CPU, stitching in host memory, bf16, the CLI.

Skipped without a GPU (CI has none); run on a GPU machine with ``pytest tests/inference/test_cuda_inference.py``.
cuDNN runs float32 convolutions in TF32 by default (10-bit mantissa), so GPU and CPU probabilities agree to
about 1e-3, not to float32 rounding.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_affine

from pe_segmentation.inference import network_pass, preprocessing
from pe_segmentation.inference.predictor import Predictor
from pe_segmentation.io.volume_files import read_volume, write_volume
from pe_segmentation.runtime.devices import visible_devices

from .helpers import make_ct, tiny_config, tiny_network

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

OBLIQUE = make_affine((0.9, 1.1, 2.0), euler_deg=(10.0, 20.0, 5.0))


def _probability(predictor: Predictor, seed: int = 0) -> tuple[np.ndarray, dict]:
    prediction = predictor.predict(make_ct(OBLIQUE, seed=seed), full_probability=True)
    return prediction.probability.array, prediction.details


def test_cuda_fp32_matches_the_cpu():
    config = tiny_config()
    network = tiny_network(config)
    cpu, _ = _probability(Predictor(network, config, "cpu", "fp32", channels_last=False))
    gpu, details = _probability(Predictor(tiny_network(config), config, "cuda", "fp32"))
    assert details["device"].startswith("cuda")
    assert details["stitch_device"].startswith("cuda")
    assert np.abs(gpu - cpu).max() < 5e-3


def test_stitching_in_host_memory_gives_the_gpu_result(monkeypatch):
    """A volume too large for the GPU keeps its stitching sums (and its resampling) on the CPU; the windows
    still run on the GPU, and the result is the same."""
    config = tiny_config()
    on_gpu, _ = _probability(Predictor(tiny_network(config), config, "cuda", "fp32"))
    for module in (network_pass, preprocessing):
        monkeypatch.setattr(module, "stitch_device", lambda device, voxels: torch.device("cpu"))
    on_host, details = _probability(Predictor(tiny_network(config), config, "cuda", "fp32"))
    assert details["stitch_device"] == "cpu"
    # the resampling ran on the CPU this time, and cuDNN may pick other TF32 kernels: seen 2e-4 on an H200
    assert np.abs(on_host - on_gpu).max() < 1e-3


def test_auto_precision_on_cuda_and_its_agreement_with_fp32():
    config = tiny_config()
    auto = Predictor(tiny_network(config), config, "cuda", "auto")
    assert auto.precision.name == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    fp32, _ = _probability(Predictor(tiny_network(config), config, "cuda", "fp32"))
    low, _ = _probability(auto)
    assert np.abs(low - fp32).max() < 0.05  # the CPU test's bf16 tolerance


def test_visible_devices():
    assert visible_devices("cuda") == [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    assert visible_devices("cuda:0") == [torch.device("cuda", 0)]


def test_infer_command_on_cuda(tmp_path, checkpoint, run_infer, series_writer):
    """DICOM and NIfTI cases on the GPU: every output, in the input's geometry, as on the CPU."""
    cases = tmp_path / "cases"
    series_writer(make_ct(OBLIQUE, shape=(32, 28, 14)), "cases/ct_dicom")
    write_volume(make_ct(OBLIQUE, seed=1), cases / "ct_nifti.nii.gz")
    common = ["--checkpoint", checkpoint, "--precision", "fp32", "--threshold", "0.45"]
    assert run_infer("-i", cases, "-o", tmp_path / "gpu", "--device", "cuda", *common) == 0
    assert run_infer("-i", cases, "-o", tmp_path / "cpu", "--device", "cpu", *common) == 0
    for case in ("ct_dicom", "ct_nifti"):
        gpu = read_volume(tmp_path / "gpu" / case / "mask.nii.gz")
        cpu = read_volume(tmp_path / "cpu" / case / "mask.nii.gz")
        assert gpu.shape == cpu.shape
        np.testing.assert_allclose(gpu.affine, cpu.affine, atol=1e-4)
        assert np.mean(gpu.array != cpu.array) < 1e-3  # TF32 may flip a voxel at the threshold
        report = json.loads((tmp_path / "gpu" / case / "report.json").read_text())
        assert report["settings"]["device"].startswith("cuda")
        assert (tmp_path / "gpu" / case / "preview.png").is_file()
    assert (tmp_path / "gpu" / "ct_dicom" / "seg.dcm").is_file()
