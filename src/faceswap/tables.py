"""Markdown tables, written one way for the whole project (the register's summary, the flow's artifacts, the
benches): tabulate's GitHub format, cells as given (no number parsing: a cell is already formatted text)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

from tabulate import tabulate

Align = Literal["left", "right", "center"]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]],
                   align: Sequence[Align] | None = None) -> str:
    """``header`` and ``rows`` as a markdown table (no trailing newline); ``None`` cells print empty.

    ``align`` (one per column) writes the alignment into the separator (``---:``), which the GitHub format omits.
    """
    rows = [list(r) for r in rows]
    if align is None:
        return tabulate(rows, headers=list(header), tablefmt="github", disable_numparse=True)
    return tabulate(rows, headers=list(header), tablefmt="pipe", disable_numparse=True, colalign=list(align))
