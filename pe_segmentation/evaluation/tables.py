"""Reading the CSV tables pe-seg writes (a run's ``metrics.csv``): one parser for the trainer and the plots."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from pe_segmentation.errors import InputDataError

__all__ = ["INTEGER_COLUMNS", "read_csv_table"]

#: Columns read as integers; the others as floats when they parse, else kept as text.
INTEGER_COLUMNS = ("epoch", "iteration")


def _cell(column: str, value: str | None) -> Any:
    if value is None or value == "":
        return None
    try:
        return int(float(value)) if column in INTEGER_COLUMNS else float(value)
    except ValueError:
        return value


def read_csv_table(path: str | os.PathLike[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """The column names and the rows of a CSV file, cells as numbers where they parse (``None`` when empty).

    Raises:
        InputDataError: the file is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"{path}: no such file")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            raw_rows = list(reader)
            columns = [name.strip() for name in reader.fieldnames or [] if name and name.strip()]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputDataError(f"{path}: cannot read ({err})") from err
    rows = [
        {
            key.strip(): _cell(key.strip(), value)
            for key, value in raw.items()
            if key is not None and key.strip()
        }
        for raw in raw_rows
    ]
    return columns, rows
