"""Versions of the software that shaped a result, recorded in checkpoints and inference reports."""

from __future__ import annotations

import importlib
import platform

#: This package's version (``pe-seg --version``; setup.cfg reads it from here).
__version__ = "0.1.0"


def package_versions(*extra: str) -> dict[str, str]:
    """pe-seg, torch, MONAI, NumPy and Python versions, plus those of the ``extra`` packages, as strings.

    Args:
        extra: import names of further packages that matter to the caller (e.g. ``"ignite"`` for training,
            ``"highdicom"`` for DICOM SEG output).
    """
    import monai
    import numpy as np
    import torch

    versions = {"pe_segmentation": __version__, "torch": str(torch.__version__), "monai": monai.__version__}
    for name in extra:
        versions[name] = str(importlib.import_module(name).__version__)
    versions["numpy"] = np.__version__
    versions["python"] = platform.python_version()
    return versions
