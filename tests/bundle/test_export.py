"""MONAI's bundle tools on the bundle: verify_net_in_out and ckpt_export (TorchScript), as
`python -m monai.bundle verify_net_in_out` / `ckpt_export` call them."""

from __future__ import annotations

import json

import pytest
import torch
from monai.bundle import ckpt_export, verify_net_in_out

from pe_segmentation.inference.predictor import Predictor

from .conftest import BUNDLE

META = str(BUNDLE / "configs" / "metadata.json")
INFERENCE = str(BUNDLE / "configs" / "inference.yaml")


def test_verify_net_in_out_passes_and_catches_a_wrong_channel_count():
    verify_net_in_out(
        net_id="network_def", meta_file=META, config_file=INFERENCE, device="cpu", bundle_root=str(BUNDLE)
    )
    with pytest.raises(ValueError, match="output channel number"):
        verify_net_in_out(
            net_id="network_def",
            meta_file=META,
            config_file=INFERENCE,
            device="cpu",
            bundle_root=str(BUNDLE),
            **{"_meta_#network_data_format#outputs#pred#num_channels": 2},
        )


@pytest.mark.filterwarnings("ignore:`torch.jit.(save|load)` is deprecated:DeprecationWarning")
def test_ckpt_export_writes_torchscript_that_matches_the_network(tmp_path):
    target = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(target),
        ckpt_file=str(BUNDLE / "models" / "model.pt"),
        meta_file=META,
        config_file=INFERENCE,
        key_in_ckpt="model",
        bundle_root=str(BUNDLE),
    )
    extra = {"metadata.json": "", "inference.json": ""}
    scripted = torch.jit.load(str(target), map_location="cpu", _extra_files=extra).eval()
    assert (
        json.loads(extra["metadata.json"])["version"]
        == json.loads((BUNDLE / "configs" / "metadata.json").read_text())["version"]
    )
    assert "predictor" in json.loads(extra["inference.json"])

    network = Predictor.from_checkpoint(
        BUNDLE / "models" / "model.pt", device="cpu", channels_last=False
    ).network
    x = torch.rand(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, exported = network(x), scripted(x)
    assert exported.shape == (1, 4, 32, 32, 32)  # background, embolus, artery, vein
    # float32 rounding of a scripted vs eager graph (another order of operations): up to 6e-4 on the shipped
    # weights' logits, whose magnitude reaches tens
    torch.testing.assert_close(exported, expected, rtol=1e-3, atol=2e-3)
    assert float(expected.std()) > 0  # trained weights, not a constant output
