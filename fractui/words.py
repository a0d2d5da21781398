"""How fractui words what it counts, in one place: "1 GPU", "2 GPUs", never "1 GPUs" or
"GPU(s)"."""

from __future__ import annotations

from typing import Optional


def count(n: int, noun: str, plural: Optional[str] = None) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1 (``plural``: where "s" is not enough)."""
    return "%d %s" % (n, noun if n == 1 else plural or noun + "s")
