"""Metric values as table rows: the run summary, `src.eval` and the benchmarks print them the same way."""

from __future__ import annotations

import re
from collections.abc import Mapping

SHARE = re.compile(r"^(?:val/)?class_share_(\d+)$")


def metric_rows(values: Mapping[str, float]) -> list[tuple[str, str]]:
    """(name, value) rows, sorted; the per-class shares of the samples collapse into one `class_shares` row."""
    rows, shares = [], {}
    for key, value in sorted(values.items()):
        match = SHARE.match(key)
        if match:
            shares[int(match.group(1))] = float(value)
        else:
            rows.append((key, f"{float(value):.4f}"))
    if shares:
        prefix = "val/" if any(k.startswith("val/") for k in values) else ""
        text = " ".join(f"{c}:{100 * v:.1f}%" for c, v in sorted(shares.items()))
        rows.append((f"{prefix}class_shares", text))
        rows.sort()
    return rows
