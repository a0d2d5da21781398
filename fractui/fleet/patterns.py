"""OpenSSH's host patterns, as ssh_config's ``Host`` and known_hosts' host field read them.

A pattern list is comma- or space-separated; ``*`` and ``?`` are the only wildcards (no ``[...]``
classes, unlike fnmatch); a pattern starting with ``!`` negates, and a negated match wins over
every positive one. Host names compare case-insensitively (OpenSSH's match_hostname).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> "re.Pattern[str]":
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts) + r"\Z", re.DOTALL)


def matches(pattern: str, name: str) -> bool:
    """One pattern (no negation) against one name, case-insensitively."""
    return _compiled(pattern.lower()).match(name.lower()) is not None


def matches_list(patterns: Iterable[str], name: str) -> bool:
    """True if some positive pattern matches ``name`` and no negated one does."""
    found = False
    for pattern in patterns:
        if pattern.startswith("!"):
            if matches(pattern[1:], name):
                return False
        elif matches(pattern, name):
            found = True
    return found
