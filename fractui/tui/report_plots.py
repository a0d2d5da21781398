"""The report screen's plots, drawn by plotext on textual-plotext's figures: GPUs held per team,
the utilisation of what NVML measured per team, the median wait, and the whole GPUs the jobs
would have needed without sharing against the GPUs they used. Drawing only: the numbers come
from ``fractui.usage.report.series``; no store, no clock.

A value that is not there (a step where nothing measured was held, where no job started) is
left out of its line — the line breaks there — never drawn as 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from textual_plotext.plot import Plot

from fractui.usage.report import Series

RGB = tuple[int, int, int]
LINE = "hd"  # plotext's marker of a line in half cells: a team's where teams are not marked
EPSILON = 1e-9  # GPUs: less than this held is nothing held


@dataclass(frozen=True)
class Axis:
    """Time along x: steps placed at their middle, in ``unit`` before the range's end."""

    unit: str
    seconds: float

    def ticks(self, span_s: float, count: int = 5) -> tuple[list[float], list[str]]:
        """``count`` ticks from the range's start to its end ("now")."""
        length = span_s / self.seconds
        at = [-length + i * length / (count - 1) for i in range(count)]
        return at, ["%.3g%s" % (x, self.unit) for x in at[:-1]] + ["now"]


def axis_for(span_s: float) -> Axis:
    """Minutes for a range of two hours or less, hours up to three days, else days."""
    if span_s <= 2 * 3600:
        return Axis("m", 60.0)
    if span_s <= 3 * 86400:
        return Axis("h", 3600.0)
    return Axis("d", 86400.0)


def xs(series: Series, axis: Axis) -> list[float]:
    """Each step's middle, in the axis's unit, before the range's end (negative)."""
    end = series.starts[0] + series.step_s * len(series.starts) if series.starts else 0.0
    return [(t + series.step_s / 2 - end) / axis.seconds for t in series.starts]


def runs(x: Sequence[float], y: Sequence[Optional[float]]
         ) -> list[tuple[list[float], list[float]]]:
    """The stretches of ``y`` without a gap (None), each as its own line."""
    found: list[tuple[list[float], list[float]]] = []
    last = False
    for a, b in zip(x, y):
        if b is None:
            last = False
            continue
        if not last:
            found.append(([], []))
        found[-1][0].append(a)
        found[-1][1].append(b)
        last = True
    return found


def _frame(plt: Plot, title: str, span_s: float, axis: Axis) -> None:
    plt.clear_figure()
    plt.title(title)
    at, labels = axis.ticks(span_s)
    plt.xticks(at, labels)
    plt.xlim(at[0], at[-1])


def _lines(plt: Plot, x: Sequence[float], y: Sequence[Optional[float]], colour: RGB,
           label: Optional[str], marker: str = LINE) -> None:
    """``y`` as a line (broken where a value is missing), labelled once."""
    for i, (rx, ry) in enumerate(runs(x, y)):
        plt.plot(rx, ry, color=colour, label=label if i == 0 else None, marker=marker)


def allocation(plt: Plot, series: Series, span_s: float, colours: Mapping[str, RGB],
               marks: Mapping[str, str]) -> None:
    """GPUs held per team over time (fractions as charged); a team of ``marks`` drawn with
    its mark (report_view.marks), the others as lines."""
    axis = axis_for(span_s)
    _frame(plt, "GPUs held, per team", span_s, axis)
    x = xs(series, axis)
    for team, held in series.held.items():
        _lines(plt, x, held, colours[team], team, marks.get(team, LINE))
    plt.ylim(0, max([max(h, default=0.0) for h in series.held.values()], default=0.0) or 1)


def utilisation(plt: Plot, series: Series, span_s: float,
                colours: Mapping[str, RGB], marks: Mapping[str, str]) -> None:
    """Per team, the GPUs it used as a percent of the GPUs it held where NVML measured them
    (over 100 where a share used more of its GPU than it was charged, the GPU's time being
    shared); a step where none of its GPUs was measured (MIG) is a gap. ``marks`` as
    ``allocation``'s."""
    axis = axis_for(span_s)
    _frame(plt, "used, % of the GPUs held (measured)", span_s, axis)
    x = xs(series, axis)
    top = 100.0
    for team, used in series.used.items():
        measured = series.measured[team]
        percent = [u / m * 100 if m > EPSILON else None for u, m in zip(used, measured)]
        top = max([top] + [p for p in percent if p is not None])
        _lines(plt, x, percent, colours[team], team, marks.get(team, LINE))
    plt.ylim(0, top)


def waits(plt: Plot, series: Series, span_s: float, colour: RGB) -> None:
    """The median wait of the jobs that started in each step (a gap where none did), in
    seconds, minutes or hours as the longest needs."""
    axis = axis_for(span_s)
    longest = max((w for w in series.wait_median_s if w is not None), default=None)
    unit, seconds = ("h", 3600.0) if (longest or 0) >= 7200 else (
        ("min", 60.0) if (longest or 0) >= 120 else ("s", 1.0))
    _frame(plt, "median wait (%s)%s" % (unit, "" if longest is not None else
                                         ": no job started in the range"), span_s, axis)
    _lines(plt, xs(series, axis), [None if w is None else w / seconds
                                   for w in series.wait_median_s], colour, None, "dot")
    plt.ylim(0, (longest or 1) / seconds)


def saving(plt: Plot, series: Series, span_s: float, demand: RGB, used: RGB) -> None:
    """Whole GPUs needed without sharing against the GPUs used: the gap is what sharing
    saved."""
    axis = axis_for(span_s)
    _frame(plt, "GPUs: needed without sharing vs used", span_s, axis)
    x = xs(series, axis)
    _lines(plt, x, series.demand, demand, "without sharing")
    _lines(plt, x, series.gpus_used, used, "used")
    plt.ylim(0, max(series.demand + series.gpus_used, default=0.0) or 1)
