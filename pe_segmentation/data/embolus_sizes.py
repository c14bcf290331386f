"""Embolus size classes: the one definition that the phantoms draw from and that evaluation reports by.

Clinically, central and lobar clots (over 500 mm^3) are found by every reader and model, segmental ones
(50-500 mm^3) by most, and small subsegmental ones (under 50 mm^3) are where detection fails; per-class
sensitivity is how the PE literature reports it. On FUMPE's 35 expert masks, 69% of emboli are central,
23% segmental and 8% small.
"""

from __future__ import annotations

SIZE_CLASSES = ("central", "segmental", "small")
CENTRAL_MIN_MM3 = 500.0
SMALL_MAX_MM3 = 50.0
CLASS_DEFINITIONS = {"central": "> 500 mm^3", "segmental": "50-500 mm^3", "small": "< 50 mm^3"}


def size_class(volume_mm3: float) -> str:
    """Size class of a labelled embolus volume: ``central`` (> 500), ``segmental`` (50-500), ``small`` (< 50)."""
    if volume_mm3 > CENTRAL_MIN_MM3:
        return "central"
    return "segmental" if volume_mm3 >= SMALL_MAX_MM3 else "small"
