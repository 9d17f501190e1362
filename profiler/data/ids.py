"""Stable example ids.

An id is a hash of the example's normalized messages, so it survives re-runs, re-ordering and a change
of file format (the same Alpaca row and its ShareGPT twin get the same id). The n-th repeat of identical
content gets the suffix ``-n``, so duplicate rows stay distinct and still stable.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any


def content_hash(obj: Any) -> str:
    """A 16-hex-digit hash of a JSON-serializable object (keys sorted, unicode kept)."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class IdAssigner:
    """Gives each content hash an id, numbering repeats in order of appearance."""

    def __init__(self) -> None:
        self._seen: Counter[str] = Counter()

    def __call__(self, base: str) -> str:
        k = self._seen[base]
        self._seen[base] += 1
        return base if k == 0 else f"{base}-{k}"
