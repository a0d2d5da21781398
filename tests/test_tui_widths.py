"""What the screens draw at the widths admins have (80, 100, 120 and 160 columns): a line
cut says it was cut, and a key hint is listed whole or not at all."""

from __future__ import annotations

import re
import threading

import pytest

from rich.text import Text
from textual.theme import BUILTIN_THEMES

from fractui.tui import legend as legend_module
from fractui.tui.bars import Paint, owner_marks
from fractui.tui.legend import Legend, legend
from fractui.tui.parts import wrap_parts
from fractui.tui.themes import palette_for
from tests.test_tui_report import drawn
from tests.tui_frozen import STATES, pilot_test, screen_lines, settled, settled_app, usage_store

SIZES = [(80, 24), (100, 30), (120, 40), (160, 50)]


@pytest.mark.parametrize("size", SIZES)
@pilot_test
async def test_a_hosts_line_cut_at_the_maps_edge_ends_in_an_ellipsis(size):
    """h100-1's error (the agent's words) is longer than its line at 80 and 120 columns:
    it ends in "…" there, as a cut reason does, and is whole where it fits."""
    async with settled_app(size) as (app, pilot):
        error = STATES["h100-1"][1]
        line = next(ln for ln in screen_lines(app) if ln.startswith("▌h100-1 "))
        drawn = line.split("  ", 2)[2].split("▏")[0].rstrip()
        assert drawn == error or drawn.endswith("…") and error.startswith(drawn[:-1]), line


@pytest.mark.parametrize("size", SIZES)
@pilot_test
async def test_the_pending_lists_keys_are_whole_or_left_out(size):
    """The pending list's title: at 120 to 169 columns (a panel of 43 cells) "drag to a
    GPU" was cut to "drag to …"; a key that does not fit is left out whole."""
    async with settled_app(size) as (app, pilot):
        line = next(ln for ln in screen_lines(app) if " Pending " in ln)
        title = line.split(" Pending ", 1)[1].split("  ", 1)
        assert len(title) == 2 and "…" not in line, line
        shown = title[1].strip().split(" · ")
        assert shown == ["p place", "⏎ open", "drag to a GPU"][:len(shown)] and shown, line


@pytest.mark.parametrize("size", SIZES)
@pilot_test
async def test_the_jobs_views_title_wraps_between_its_parts(size):
    """With the ended jobs asked for (``a``) and being read the title is longer than 80
    columns: it went on mid-part ("sorted by age/wait" above, its "↓" below); each part stays
    on one line. The read is held while the title is looked at: one that ended first (on a
    loaded machine) left a title that fits."""
    held = threading.Event()

    def hanging() -> tuple:
        held.wait(60)
        return ()

    async with settled_app(size) as (app, pilot):
        app.source.read_newest_ended = hanging
        try:
            await pilot.press("J", "a")
            await pilot.pause()
            lines = screen_lines(app)
        finally:
            held.set()
        title = lines[:lines.index(next(ln for ln in lines if ln.startswith(" id ")))]
        parts = [p for ln in title for p in ln.strip().split(" · ")]
        assert parts[0].startswith("jobs, the newest 200 ended too (reading them…)"), title
        assert parts[2:] == ["sorted by age/wait ↓"], title  # (the keys: on the key line)
        assert len(title) == (2 if size[0] < 100 else 1), title


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("screen", ["gpu", "job"])
@pilot_test
async def test_a_gpus_lines_go_on_between_their_parts(size, screen):
    """The health line of the GPU view and of the job screen at 80 columns went on inside a
    part: "ECC 0 corrected, 0" over "uncorrected", read as two figures; so did the GPU view's
    own line ("util n/a (not reported by" over "NVML for MIG instances)")."""
    async with settled_app(size) as (app, pilot):
        if screen == "gpu":
            app.open_gpu("a100-1", 0)
        else:
            app.open_job(1)
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        drawn = "\n".join(screen_lines(app))
        for part in ("temp 35 °C (slows at 89 °C)", "power 96/400 W",
                     "ECC 0 corrected, 0 uncorrected", "throttle none", "XID none") + (
                         "10.8G used of 80.0G", "util n/a (not reported by NVML for MIG "
                         "instances)") * (screen == "gpu"):
            assert part in drawn, drawn


REPORT_KEYS = ["esc back", "h hour", "d 24 h", "w 7 days", "a all", "g group", "r refresh"]


@pytest.mark.parametrize("size", SIZES)
@pilot_test
async def test_the_reports_keys_are_listed_whole_and_as_remapped(size, tmp_path):
    """The report's title listed its keys as fixed words ("h d w a: range · g: group · r:
    refresh"), without esc, cut to "r:" at 80 columns while it read the store by GPU model,
    and the same after ``[tui] keys`` remapped them: the keys are listed on a line of their
    own at the bottom, from the bindings, each whole; the title keeps the range and the
    grouping."""
    store = usage_store(str(tmp_path / "store.db"))
    async with settled_app(size, usage=store, keys=(("report.hour", "H"),)) as (app, pilot):
        await pilot.press("R", "w", *"gggg")
        await settled(pilot)
        app.screen.draw_title(reading=True)  # (as it draws while its read is under way)
        await pilot.pause()
        lines = screen_lines(app)
        title = lines[0].split(" · ")
        assert title == [" report", "last 7 days", "by model", "reading…"], lines
        keys = [k for line in lines[-2:] for k in line.strip().split("  ")]
        assert keys[-4:] == ["J jobs", "e messages", "? help", ": command"], lines  # (the
        # app's: every key line's, the report's own R not among them, on the report)
        assert sorted(keys[-len(REPORT_KEYS) - 4:-4]) == sorted(
            k.replace("h hour", "H hour") for k in REPORT_KEYS), lines  # (a remapped key last)
    store.close()


@pytest.mark.parametrize("size", SIZES)
@pilot_test
async def test_the_reports_unmeasured_gpu_hours_go_on_between_groups(size, tmp_path):
    """Under the utilisation plot, the GPU-hours no measure covers, by team: at 120 columns
    (the plot half the width) the line went on inside a team's part, "GPU-h: nlp" over
    "11.42", read as a figure of its own; it goes on between its parts."""
    store = usage_store(str(tmp_path / "store.db"))
    async with settled_app(size, usage=store) as (app, pilot):
        await pilot.press("R")
        await settled(pilot)
        lines = [line.strip() for line in drawn(app.screen.query_one("#report-unmeasured"))]
        assert any(line.endswith("nlp 11.42") for line in lines), lines
        assert ", ".join(lines) == (  # (a line ends where a ", " was)
            "not measurable on MIG (or not sampled yet), GPU-h: nlp 11.42"), lines
    store.close()


MORE_TEAMS = ("robotics", "genomics", "climate", "recsys", "platform", "interns", "physics",
              "chemistry", "astro", "neuro", "finance")
NO_ONES = ["outside", "idle", "being made", "free", "· no fit"]


@pytest.mark.parametrize("size, more", [(size, 11) for size in SIZES] + [((80, 24), 2)])
@pilot_test
async def test_the_legend_keeps_each_colour_whole_and_says_what_it_leaves_out(size, more):
    """With 14 teams the legend needed three lines at 80 columns and kept two: "free" and
    the other colours that are no one's were not drawn, and nothing said so; with 5 at 80
    columns "being made" went on mid-name, "being" over "made". Each colour's name is whole;
    the teams that do not fit in two lines are counted instead. Fourteen teams are more than
    the theme's eight colours: each is said with its mark (``v vision``), as the map marks
    their slices; five are not."""
    async with settled_app(size, more_teams=MORE_TEAMS[:more]) as (app, pilot):
        lines = [line.strip() for line in drawn(app.screen.query_one(Legend))]
        assert 1 <= len(lines) <= 2 and lines[0].startswith("team: "), lines
        names = re.split(r"\s{2,}", "  ".join(lines)[len("team: "):].strip())
        teams = [t.name for t in app.config.teams]
        if more == 11:
            marks = owner_marks(tuple(teams))
            teams = ["%s %s" % (marks[t], t) for t in teams]
        counted = [n for n in names if n.startswith("+")]
        shown = [n for n in names if n not in NO_ONES and n not in counted]
        assert names[-len(NO_ONES):] == NO_ONES, lines
        assert shown == teams[:len(shown)] and shown, lines
        assert counted == ([] if len(shown) == len(teams) else
                           ["+%d more" % (len(teams) - len(shown))]), lines


def test_the_legend_is_laid_out_once_however_many_teams(monkeypatch):
    """The legend of 0 to 300 teams (some named in wide characters) at 0 to 200 cells: it
    shows the most teams that go in two lines with the count of the rest and the colours no
    one owns (none where even those take more), as wrapping each count in turn finds them,
    and it is wrapped once. Before, it was wrapped again for each team left out: with 300
    teams at 80 columns, some 290 wraps of 300 parts a layout (a third of a second a resize)."""
    wraps = []

    def counted(parts, width, **how):
        wraps.append(parts)
        return wrap_parts(parts, width, **how)

    monkeypatch.setattr(legend_module, "wrap_parts", counted)
    for teams in (0, 1, 14, 300):
        owners = tuple(("t%d" if i % 3 else "研究%d") % i for i in range(teams))
        paint = Paint(palette_for(BUILTIN_THEMES["textual-dark"]), "#ffffff", "#000000",
                      "#808080", (), owners)
        for width in (0, 5, 20, 39, 80, 200):
            del wraps[:]
            lines = legend(paint, teams == 1, width)
            assert len(wraps) == 1, (teams, width)
            head, parts = wraps[0][0], wraps[0][1:]
            shown = [p for p in parts if p.plain.strip() in owners]
            assert lines == wrap_parts(wraps[0], width, sep=" ")
            assert len(lines) <= 2 or not shown, (teams, width, lines)
            if len(shown) < teams:  # one more would not go in two lines
                left = teams - len(shown) - 1
                fuller = [head] + shown + [Text(" %s " % owners[len(shown)])] + (
                    [Text("+%d more" % left)] if left else []) + parts[len(shown) + 1:]
                assert len(wrap_parts(fuller, width, sep=" ")) > 2, (teams, width, lines)


PROFILES = {"1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"}


@pytest.mark.parametrize("size", SIZES + [(140, 40)])
@pilot_test
async def test_a_mig_blocks_label_is_whole_or_shorter_never_cut(size):
    """A MIG instance's block says the longest of its labels that fits: at 120 columns a
    1g.10gb's block of four cells read "1g.1" (and "1g.10g" at 140), another profile's name,
    and at 80 a 2g.20gb of vision's "2g.20gb v"; it says "1g" there, its compute slices, or
    "2g.20gb", and where not even the slices fit, nothing."""
    async with settled_app(size) as (app, pilot):
        if app.fleet.compact_now():  # (no labels: one GPU a line, as from 120 columns)
            await pilot.press("z")
            await pilot.pause()
        bars = [line.split("▏", 1)[1].rsplit("GiB", 1)[0] for line in screen_lines(app)
                if re.match(r" +\d (A100|H100) ", line)]
        assert bars, screen_lines(app)
        owners = {t.name for t in app.config.teams} | {"other", "sim"}
        for bar in bars:
            for name in re.findall(r"\d+g\.[\w+]*", bar):
                assert name in PROFILES, bar
            for name in re.findall(r"(?<![\w.#])[a-z]+(?![\w.])", bar):
                assert name in owners, bar


@pilot_test
async def test_the_mig_pickers_reasons_wrap_under_their_own_indent_at_80_columns():
    """a100-1 gpu 2's profiles that do not fit say why under their line, indented: at 80
    columns the busy instances in the way wrap, and "3g.40gb busy at slot 4" began at the
    picker's left edge, under the profiles' names, read as one. Each wrapped line of a reason
    keeps its indent."""
    async with settled_app((80, 24)) as (app, pilot):
        app.open_gpu("a100-1", 2)
        await settled(pilot)
        await pilot.press("N")
        await settled(pilot)
        inside = [ln.split("▊", 1)[1] for ln in screen_lines(app) if "▊" in ln]
        reason = next(i for i, ln in enumerate(inside) if "no free placement:" in ln)
        assert inside[reason].startswith("   no free placement:"), inside
        assert inside[reason + 1].startswith("   3g.40gb busy at slot 4"), inside
