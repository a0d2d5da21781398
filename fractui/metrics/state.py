"""What the metrics are made from: the scheduler's report after each turn of its loop, and the
whole state one scrape reads. Plain data, no prometheus_client: the scheduler imports only this."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

from fractui.config import TeamConfig
from fractui.sched.fleetview import HostView
from fractui.store.model import Job


@dataclass(frozen=True)
class PassReport:
    """One turn of the scheduler's loop, as the exporter hears of it."""

    holder: str
    """The scheduler's name in the lease."""
    held: bool
    """Whether it holds the lease now (by its own clock, not past the lease's expiry)."""
    store_ok: bool
    """Whether the store answered its last turn."""
    jobs: Optional[Sequence[Job]] = None
    """The store's active jobs at the end of a full pass; None when the turn ran none (it only
    renewed the lease, stood by, or the store failed): the last ones stand."""
    seconds: Optional[float] = None
    """How long the full pass took."""
    copies: Optional[Mapping[str, Mapping[str, int]]] = None
    """After a full pass, host -> kind (``copies.COPY_KINDS``) -> the live copies under the
    store's key that it found the store does not hold, for each host it could reach."""
    at: float = 0.0
    """When the turn ended (epoch seconds)."""
    store_lead: Optional[float] = None
    """After a full pass, how far the store's clock (on PostgreSQL the server's, which dates
    the submits and requeues) runs ahead of the scheduler's, as it last read the store's jobs;
    None when the turn ran none: the last one stands."""


@dataclass(frozen=True)
class MetricsState:
    """Everything one scrape reports, all of it already in memory: the fleet's hosts as their
    sessions last heard them, the jobs of the last full pass, the config's teams and queues."""

    now: float
    holder: str
    hosts: Sequence[HostView]
    jobs: Sequence[Job]
    teams: Sequence[TeamConfig]
    queues: Sequence[str]
    lease_held: bool
    store_reachable: bool
    last_pass: Optional[float] = None
    """When the last full pass ended (epoch seconds); None before the first."""
    copies: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    """The copies the store does not hold, as the last full pass found them (PassReport)."""
    store_lead: float = 0.0
    """How far the store's clock runs ahead of ``now``'s (PassReport): a wait is counted to
    the store's clock, which dated its start, as every other view of a wait counts it."""
