"""Which k GPUs of a host a multi-GPU job gets: those that share the fastest link. Pure.

A host's links are its agent's matrix (``hello.links``: nvidia-smi topo -m's names, ``X`` on the
diagonal). A set of GPUs is as fast as its slowest pair, so the best set has the best worst
pair: all in one NVLink island or NVSwitch fabric where one has k usable GPUs, else the least
bad spill (then the most NVLink links over all pairs, then the lowest indices). An empty or
malformed matrix is unknown: the first k usable GPUs, as without topology.
"""

from __future__ import annotations

import itertools
from math import comb
from typing import Optional, Sequence, Tuple

from remote_agent.digits import whole

Links = Tuple[Tuple[str, ...], ...]

# PCIe paths from slowest to fastest; any NVLink beats them, NVSwitch beats direct NV#.
_PCIE = ("SYS", "NODE", "PHB", "PXB", "PIX")
_NVSWITCH = 10_000
EXACT_LIMIT = 20_000  # sets of k GPUs tried one by one; beyond it, a greedy pick per start GPU


def rank(link: str) -> int:
    """How fast a link is: higher is faster; 0 for a name this does not know."""
    if link == "NVSWITCH":
        return _NVSWITCH
    count = whole(link[2:], _NVSWITCH - 101) if link.startswith("NV") else None
    if count is not None:  # (text an agent or the store wrote: "NV²" is no count)
        return 100 + count
    return _PCIE.index(link) + 1 if link in _PCIE else 0


def is_nvlink(link: Optional[str]) -> bool:
    return link is not None and rank(link) > len(_PCIE)


def known(links: Links, count: int) -> bool:
    """Whether ``links`` is a usable matrix for a host of ``count`` GPUs."""
    return count > 0 and len(links) == count and all(len(row) == count for row in links)


def slowest(links: Links, gpus: Sequence[int]) -> Optional[str]:
    """The slowest link among ``gpus`` (None for fewer than two GPUs or unknown links)."""
    pairs = [links[a][b] for a, b in itertools.combinations(gpus, 2)]
    return min(pairs, key=rank) if pairs else None


def _key(links: Links, gpus: Sequence[int]) -> Tuple[int, int]:
    ranks = [rank(links[a][b]) for a, b in itertools.combinations(gpus, 2)]
    return min(ranks), sum(ranks)


def pick(links: Links, usable: Sequence[int], k: int) -> Tuple[int, ...]:
    """k of the ``usable`` GPUs that share the fastest link (``usable`` in index order, at
    least k of them)."""
    if k < 2 or not known(links, len(links)) or any(g >= len(links) for g in usable):
        return tuple(usable[:k])
    if comb(len(usable), k) <= EXACT_LIMIT:
        sets = itertools.combinations(usable, k)
    else:
        sets = (_greedy(links, usable, k, first) for first in usable)  # type: ignore[assignment]
    best: Optional[Tuple[int, ...]] = None
    best_key = (-1, -1)
    for gpus in sets:
        key = _key(links, gpus)
        if key > best_key:  # strictly better: ties keep the earlier, lower-index set
            best, best_key = tuple(sorted(gpus)), key
    return best  # type: ignore[return-value]


def _greedy(links: Links, usable: Sequence[int], k: int, first: int) -> Tuple[int, ...]:
    """From ``first``, add the GPU whose slowest link to those taken is fastest, k times."""
    taken = [first]
    left = [g for g in usable if g != first]
    while len(taken) < k:
        nxt = max(left, key=lambda g: (min(rank(links[g][t]) for t in taken), -g))
        taken.append(nxt)
        left.remove(nxt)
    return tuple(sorted(taken))


def explain(links: Links, gpus: Sequence[int]) -> Optional[str]:
    """The preview's words for the link ``gpus`` share: "4 GPUs on NVLink (NV12)", or
    "spans PCIe host bridge (PHB): no NVLink island with 4 free GPUs"; None for one GPU or
    unknown links."""
    if not known(links, len(links)) or len(gpus) < 2:
        return None
    link = slowest(links, gpus)
    assert link is not None
    if is_nvlink(link):
        return "%d GPUs on %s (%s)" % (len(gpus), "NVSwitch" if link == "NVSWITCH"
                                        else "NVLink", link)
    where = _PCIE_WORDS.get(link, "an unknown path")
    island = any(is_nvlink(x) for row in links for x in row)
    return "spans %s (%s)%s" % (where, link, ": no NVLink island with %d free GPUs" % len(gpus)
                                if island else "")


_PCIE_WORDS = {"PIX": "a PCIe switch", "PXB": "several PCIe switches",
               "PHB": "PCIe host bridge", "NODE": "PCIe host bridges of one NUMA node",
               "SYS": "CPU sockets"}
