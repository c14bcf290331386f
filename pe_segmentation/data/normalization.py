"""``preprocessing.normalization``: how CT values in HU become the network's input.

The transform itself is :func:`~pe_segmentation.data.transforms.build_preprocessing`'s, from
:attr:`~pe_segmentation.data.settings.PreprocessingSettings.intensity_map`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import ClassVar

from pe_segmentation.data.settings_base import SettingsSection

#: The CT normalisation schemes of :class:`NormalizationSettings`.
NORMALIZATION_SCHEMES = ("window", "ct_foreground")


@dataclass(frozen=True)
class NormalizationSettings(SettingsSection):
    """How CT values in HU become the network's input (``preprocessing.normalization``).

    Attributes:
        scheme: ``window`` (the default, and what every model before this setting was trained with):
            ``preprocessing.hu_window`` mapped linearly onto [0, 1], values outside clipped.
            ``ct_foreground``: nnU-Net's CT scheme: clip to ``clip``, then subtract ``mean`` and divide by
            ``std``, the statistics of the labelled foreground (the emboli) over the training set, which
            ``pe-seg plan`` measures (0.5th and 99.5th percentiles, mean and SD).
        clip: ``[low, high]`` HU (``ct_foreground`` only).
        mean: HU subtracted after clipping (``ct_foreground`` only).
        std: HU divided by after subtracting the mean, > 0 (``ct_foreground`` only).

    Either way the map is one clipped linear function of HU (:attr:`PreprocessingSettings.intensity_map`),
    so the augmentation's intensity settings (``shift_intensity``, ``noise_std``) are in the units it gives:
    a 600 HU window makes 0.1 60 HU; an SD of 92 HU makes it 9.2 HU.
    """

    section: ClassVar[str] = "preprocessing.normalization"

    scheme: str = "window"
    clip: tuple[float, float] | None = None
    mean: float | None = None
    std: float | None = None

    def __post_init__(self) -> None:
        scheme = self.scheme
        if not isinstance(scheme, str) or scheme.lower() not in NORMALIZATION_SCHEMES:
            close = difflib.get_close_matches(str(scheme), NORMALIZATION_SCHEMES, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise self._fail(
                "scheme", f"expected one of {', '.join(NORMALIZATION_SCHEMES)}, got {scheme!r}{hint}"
            )
        self._set("scheme", scheme.lower())
        stats = ("clip", "mean", "std")
        if self.scheme == "window":
            for name in stats:
                if getattr(self, name) is not None:
                    raise self._fail(
                        name,
                        "used by scheme ct_foreground only (scheme window maps preprocessing.hu_window "
                        "onto [0, 1]); remove it or set it to null",
                    )
            return
        for name in stats:
            if getattr(self, name) is None:
                raise self._fail(
                    name, "scheme ct_foreground needs clip, mean and std (pe-seg plan measures them)"
                )
        low, high = (self._number("clip", v) for v in self._sequence("clip", (2,)))
        if low >= high:
            raise self._fail("clip", f"low must be below high, got [{low:g}, {high:g}]")
        self._set("clip", (low, high))
        self._set("mean", self._number("mean"))
        self._set("std", self._number("std", low=0.0, strict_low=True))
