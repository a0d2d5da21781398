"""A GPU's health and recent history as one widget: its health in words (temperature, power,
ECC errors, clock throttling, XID errors, and why it is unhealthy) over two sparklines —
utilisation and memory over the last minutes (fractui.tui.history). The job screen mounts it
for the job's GPU, with the job's own memory; the GPU detail view mounts it for a GPU."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Sparkline, Static

from fractui.sched.health import unhealthy
from fractui.tui.history import BUCKETS, WINDOW_S, History, gpu_key
from fractui.tui.jobrows import mib_text
from fractui.tui.parts import BetweenParts
from fractui.tui.themes import RichVariables
from fractui.words import duration


@dataclass(frozen=True)
class Series:
    """One sparkline: what it shows (with its value now) and its values over the window."""

    label: str
    values: tuple[float, ...]
    """One per step of ``WINDOW_S / BUCKETS`` seconds, the newest last."""

    def caption(self) -> str:
        """The label and how far back the values go (none: NVML reports none, e.g. MIG)."""
        if not self.values:
            return self.label
        return "%s · last %s" % (self.label, duration(len(self.values) * WINDOW_S / BUCKETS))


def gpu_series(history: History, host: str, gpu: Mapping[str, Any]) -> tuple[Series, Series]:
    """A GPU's utilisation and memory sparklines from the history kept of it."""
    key = gpu_key(host, gpu.get("index", 0))
    util = gpu.get("utilization_gpu")
    return (Series("util %s" % ("n/a (MIG)" if util is None else "%3d%%" % util),
                   tuple(history.buckets(key, "util"))),
            Series("memory %s/%s" % (mib_text(gpu.get("memory_used_mib")),
                                     mib_text(gpu.get("memory_mib"))),  # as the GPU's line
                   tuple(history.buckets(key, "used_mib"))))


def health_text(gpu: Mapping[str, Any], now: float, warning: str) -> Text:
    """A GPU's health in a line or two; ``now`` on the agent's clock (its snapshot's time)."""
    h = gpu.get("health")
    if not h:
        return Text("health: not reported by this host's agent", style="dim")

    def known(value: Any, fmt: str) -> str:
        return "?" if value is None else fmt % value

    ecc = h.get("ecc_volatile")
    parts = [
        "temp %s (slows at %s)" % (known(h.get("temperature_c"), "%d °C"),
                              known(h.get("slowdown_c"), "%d °C")),
        "power %s/%s W" % (known(h.get("power_mw") and h["power_mw"] / 1000, "%.0f"),
                           known(h.get("power_limit_mw") and h["power_limit_mw"] / 1000, "%.0f")),
        "ECC n/a" if ecc is None else "ECC %s corrected, %d uncorrected" % (
            known(ecc["corrected"], "%d"), ecc["uncorrected"]),
        "throttle %s" % ("?" if h.get("throttle") is None else
                         ", ".join(h["throttle"]) or "none"),
        "XID %s" % (", ".join(str(e["xid"]) for e in h.get("xid") or ()) or "none"),
    ]
    out = Text(" · ".join(parts))
    if h.get("unmeasured"):
        out.append("  (not measured here: %s)" % ", ".join(h["unmeasured"]), style="dim")
    why = unhealthy(gpu, now)
    if why:
        out.append("\nunhealthy: " + why, style="bold " + warning)
    return out


class HealthPanel(Vertical):
    DEFAULT_CSS = """
    HealthPanel { height: auto; padding: 0 1; background: $panel; }
    HealthPanel #health-lines { height: auto; }
    HealthPanel Horizontal { height: 1; }
    HealthPanel .spark-label { width: auto; padding-right: 1; }
    HealthPanel #second-label { margin-left: 3; }
    HealthPanel Sparkline { width: 1fr; }
    """

    def compose(self) -> ComposeResult:
        yield Static(id="health-lines", markup=False)
        with Horizontal():
            yield Static(id="first-label", markup=False, classes="spark-label")
            yield Sparkline(id="first")
            yield Static(id="second-label", markup=False, classes="spark-label")
            yield Sparkline(id="second")

    def show(self, title: str, gpu: Optional[Mapping[str, Any]], now: float,
             first: Series, second: Series, title_width: int = 0) -> None:
        """``title`` says which GPU, in a column of at least ``title_width`` cells (the
        label column of the lines above it); ``now`` is its snapshot's time. The health's
        lines, wrapped ones and the reason it is unhealthy too, begin where its first does,
        as a label's value does on the lines above (they began under the title)."""
        warning = RichVariables(self.app).get("warning", "yellow")
        lines = Table.grid(padding=(0, 2))
        lines.add_column(style="bold", no_wrap=True, min_width=title_width)
        lines.add_column(overflow="fold")
        lines.add_row(title, BetweenParts(health_text(gpu, now, warning)) if gpu is not None
                      else Text("not in its host's snapshot", style="dim"))
        self.query_one("#health-lines", Static).update(lines)
        for name, series in (("first", first), ("second", second)):
            self.query_one("#%s-label" % name, Static).update(series.caption())
            # one value alone would be drawn as a full bar (its own maximum): show it flat
            values = list(series.values)
            spark = self.query_one("#" + name, Sparkline)
            spark.display = bool(values)  # none at all (MIG utilisation): no line drawn as 0
            spark.data = values * 2 if len(values) == 1 else values
