"""Strict JSON for every file and `--json` output the measuring commands write: no NaN or Infinity tokens.

An undefined value (NaN: NIQE of a flat image, a metric on an image too small) becomes `null`. An infinite one is
not undefined — PSNR of an SR identical to its reference is +inf — so it becomes the string "inf" ("-inf"), which
`from_json` reads back: the report's cache must give the same numbers on a re-run as on the first run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def to_json(value: Any) -> Any:
    """`value` with every non-finite float replaced (NaN -> None, ±inf -> "inf" / "-inf"), recursively; Paths as str."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def from_json(value: Any) -> float:
    """A number written by `to_json` back as a float (None -> NaN, "inf" -> inf)."""
    if value is None:
        return math.nan
    if isinstance(value, str):
        if value not in ("inf", "-inf"):
            raise ValueError(f"not a number: {value!r}")
        return float(value)
    return float(value)


def dumps(value: Any, **kwargs: Any) -> str:
    """json.dumps of `to_json(value)`; a non-finite float that slipped through is an error, never a bare NaN token."""
    return json.dumps(to_json(value), allow_nan=False, **kwargs)


def loads(text: str) -> Any:
    """json.loads that refuses the NaN / Infinity tokens Python's json would accept (ValueError)."""

    def refuse(token: str) -> Any:
        raise ValueError(f"non-strict JSON constant {token}")

    return json.loads(text, parse_constant=refuse)
