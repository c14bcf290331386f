"""Safe loading: files pe-seg is asked to read never run code hidden in them.

Checkpoints are read with ``torch.load(weights_only=True)`` on every path that reads one (``infer
--checkpoint``, ``train --checkpoint``, ``train --resume``, the disk cache); configs and ``--set`` values with
``yaml.safe_load``. Each crafted file below would create a marker file if it were unpickled or constructed;
pe-seg must refuse it with its own exit code and the marker must not appear. A scan of the package source
keeps every future loader on the same rule.
"""

from __future__ import annotations

import ast
import pathlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from inference.helpers import tiny_config
from training.conftest import toy_config, write_toy_cases

import pe_segmentation
from pe_segmentation.config import config_to_yaml
from pe_segmentation.data.datasets import build_dataset
from pe_segmentation.data.settings import PreprocessingSettings
from pe_segmentation.data.transforms import build_preprocessing
from pe_segmentation.errors import EXIT_CHECKPOINT, EXIT_CONFIG
from pe_segmentation.io.volume import Volume
from pe_segmentation.io.volume_files import write_volume

from .conftest import files_under


class RunsCode:
    """Unpickling this calls ``Path.touch(marker)``: a stand-in for ``os.system`` in a malicious file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _evil_checkpoint(path: Path, marker: Path, legacy: bool = False) -> Path:
    """A checkpoint that looks right (format, weights, config) but carries a payload."""
    payload = {
        "format": "pe-seg-checkpoint",
        "format_version": 1,
        "kind": "last",
        "model": {"w": torch.zeros(1)},
        "config": tiny_config().to_dict(),
        "hook": RunsCode(marker),
    }
    if legacy:  # a bare pickle stream, not torch's zip container
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    return path


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "code_ran"


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # torch, on the bare pickle
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "bare-pickle"])
@pytest.mark.parametrize("command", ["infer", "train-checkpoint", "train-resume"])
def test_a_checkpoint_that_would_run_code_is_refused_on_every_path(
    tmp_path, pe_seg, marker, hu_volume, command, legacy
):
    evil = _evil_checkpoint(tmp_path / "model.pt", marker, legacy)
    out = tmp_path / "out"
    if command == "infer":
        image = write_volume(hu_volume, tmp_path / "ct.nii.gz")
        argv = ["infer", "-i", image, "-o", out, "--checkpoint", evil, "--device", "cpu"]
    elif command == "train-checkpoint":
        config = toy_config(write_toy_cases(tmp_path / "toy", cases=3, size=16), out, "training.epochs=1")
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text(config_to_yaml(config))
        argv = ["train", "--config", recipe, "--checkpoint", evil]
    else:
        argv = ["train", "--resume", evil]

    result = pe_seg(*argv)

    assert not marker.exists(), "the payload ran"
    assert result.code == EXIT_CHECKPOINT, result.err
    assert len(result.error_lines) == 1
    assert "refused by weights_only loading" in result.error_lines[0]
    assert str(evil) in result.error_lines[0]
    assert "Traceback" not in result.err
    assert files_under(out) == []
    # the file is harmful: loading it without weights_only runs the payload
    with evil.open("rb") as handle:
        if legacy:
            pickle.load(handle)
        else:
            torch.load(handle, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    "where",
    ["recipe", "override"],
)
def test_yaml_that_would_build_objects_is_refused(tmp_path, pe_seg, marker, where):
    tag = f"!!python/object/apply:pathlib.Path.touch [{marker}]"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"training:\n  epochs: {tag}\n" if where == "recipe" else "training:\n  epochs: 1\n")
    argv = ["train", "--config", recipe, "--run-dir", tmp_path / "run"]
    if where == "override":
        argv += ["--set", f"training.epochs={tag}"]

    result = pe_seg(*argv)

    assert result.code == EXIT_CONFIG, result.err
    assert not marker.exists()
    assert len(result.error_lines) == 1
    assert "YAML" in result.error_lines[0] or "training.epochs" in result.error_lines[0]
    assert files_under(tmp_path / "run") == []


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # torch, on the planted pickle
def test_a_poisoned_disk_cache_file_is_recomputed_not_run(tmp_path, marker, hu_volume):
    """``data.cache: disk`` reads MONAI's cache files with ``weights_only=True``: a planted one is dropped."""
    write_volume(hu_volume, tmp_path / "ct.nii.gz")
    write_volume(Volume((hu_volume.array > 0).astype(np.uint8), hu_volume.affine), tmp_path / "label.nii.gz")
    items = [{"image": str(tmp_path / "ct.nii.gz"), "label": str(tmp_path / "label.nii.gz")}]
    chain = build_preprocessing(PreprocessingSettings(spacing=None, crop_foreground=False))
    dataset = build_dataset(items, chain, cache="disk", cache_dir=tmp_path / "cache")
    assert dataset.weights_only is True
    first = dataset[0]["image"]
    (cached,) = (tmp_path / "cache").glob("*.pt")
    cached.write_bytes(pickle.dumps({"image": RunsCode(marker)}))

    with pytest.warns(UserWarning, match="Corrupt cache file"):
        again = dataset[0]["image"]

    assert not marker.exists()
    assert torch.equal(torch.as_tensor(again), torch.as_tensor(first))


# ----------------------------------------------------------------------------------- a scan of the package


#: Calls that turn bytes into objects by running whatever the bytes name.
UNSAFE_CALLS = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("pickle", "Unpickler"),
    ("yaml", "load"),
    ("yaml", "unsafe_load"),
    ("yaml", "full_load"),
    ("yaml", "load_all"),
    ("marshal", "loads"),
    ("dill", "load"),
    ("joblib", "load"),
}
#: TorchScript archives are programs; only the export module reads them, for files the user exported.
TORCHSCRIPT_READERS = {"networks/export.py"}


def _dotted(node: ast.AST) -> tuple[str, ...]:
    if isinstance(node, ast.Attribute):
        return (*_dotted(node.value), node.attr)
    if isinstance(node, ast.Name):
        return (node.id,)
    return ("<expression>",)


def _keyword(call: ast.Call, name: str) -> object:
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value.value if isinstance(keyword.value, ast.Constant) else "<expression>"
    return None


def unsafe_loads(root: Path) -> list[str]:
    """``file:line: call`` for every load in ``root``'s Python files that could run code from its input."""
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = _dotted(node.func)
            where = f"{relative}:{node.lineno}: {'.'.join(name)}"
            if name[-2:] in UNSAFE_CALLS or name in (("eval",), ("exec",)):
                found.append(where)
            elif name[-2:] == ("torch", "load") and _keyword(node, "weights_only") is not True:
                found.append(f"{where} without weights_only=True")
            elif (
                name[-1:] == ("load",)
                and name[-2:-1] == ("np",)
                and _keyword(node, "allow_pickle") not in (None, False)
            ):
                found.append(f"{where} with allow_pickle")
            elif name[-3:] == ("torch", "jit", "load") and relative not in TORCHSCRIPT_READERS:
                found.append(where)
    return found


def test_the_package_loads_nothing_unsafely():
    assert unsafe_loads(Path(pe_segmentation.__file__).parent) == []


def test_the_scan_finds_unsafe_loads(tmp_path):
    (tmp_path / "bad.py").write_text(
        "import pickle, torch, yaml, numpy as np\n"
        "torch.load('a.pt')\n"
        "torch.load('b.pt', weights_only=False)\n"
        "torch.load('c.pt', weights_only=True)\n"
        "pickle.loads(b'')\n"
        "yaml.load('a: 1', Loader=yaml.Loader)\n"
        "yaml.safe_load('a: 1')\n"
        "np.load('x.npy', allow_pickle=True)\n"
        "eval('1')\n"
    )
    assert [line.split(": ", 1)[0] for line in unsafe_loads(tmp_path)] == [
        "bad.py:2",
        "bad.py:3",
        "bad.py:5",
        "bad.py:6",
        "bad.py:8",
        "bad.py:9",
    ]
