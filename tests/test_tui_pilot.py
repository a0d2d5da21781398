"""The TUI driven by keys (Textual's pilot) on the frozen fleet: filter, palette jumps, themes,
keys remapped from the config, and updates that arrive from other threads."""

from __future__ import annotations

import dataclasses
import os
import random
import sys
import threading
from typing import List, Tuple

import pytest

from textual import events
from textual.command import CommandInput, CommandPalette
from textual.fuzzy import FuzzySearch, Matcher
from textual.keys import _character_to_key
from textual.widgets import Input

from fractui.config import ConfigError, load_config
from fractui.store.model import Job
from fractui.tui.app import check_tui_settings
from fractui.tui.bars import owner_marks
from fractui.tui import commands
from fractui.tui.commands import FleetCommands, _distance, _highlight
from fractui.tui.fleet_screen import FleetScreen
from fractui.tui.model import GpuLine, HostLine
from fractui.tui.queues import QueuePanel
from fractui.tui.themes import theme_names
from tests.conftest import REPO
from tests.test_job_supervision import fill
from tests.tui_frozen import frozen_app, pilot_test, said, screen_lines, settled, settled_app
from tests.tui_live import until


def fleet(app) -> FleetScreen:
    assert isinstance(app.screen, FleetScreen)
    return app.screen


def shown_hosts(app) -> list[str]:
    return [line.name for line in fleet(app).map.lines if isinstance(line, HostLine)]


def typed(app, text: str) -> None:
    """``text`` as a terminal sends it: a key event for each character, all at once (named as
    ``pilot.press`` names them). ``pilot.press`` waits for the process to go idle after each
    key, about 0.1 s with a live fleet's threads in it: a wait of the test's, not the app's."""
    for char in text:
        app.post_message(events.Key(_character_to_key(char), char))


async def palette(pilot, text: str) -> None:
    """Run the palette's first hit for ``text`` once its search for all of it has ended (it
    searches in a worker: a fixed 0.3 s was a guess a loaded machine may outlast)."""
    await pilot.press("colon")
    await pilot.pause()
    typed(pilot.app, text)
    await until(pilot, lambda: searched(pilot.app, text), "the palette's search for %r" % text)
    await pilot.press("enter")
    await pilot.pause()


def searched(app, text: str) -> bool:
    """Whether the command palette holds ``text`` and none of its searches runs (the one
    ``text`` started has ended)."""
    screen = app.screen
    return (isinstance(screen, CommandPalette) and screen.query_one(CommandInput).value == text
            and not any(w.group == CommandPalette._GATHER_COMMANDS_GROUP for w in app.workers))


@pilot_test
async def test_filter_keeps_matching_gpus_and_esc_clears_it():
    async with settled_app((160, 48)) as (app, pilot):
        assert shown_hosts(app) == ["a100-1", "h100-1", "l4-1", "a10-1"]
        await pilot.press("slash", *"L4", "enter")
        assert shown_hosts(app) == ["l4-1"]
        gpus = [line for line in fleet(app).map.lines if isinstance(line, GpuLine)]
        assert [g.model for g in gpus] == ["L4"] * 4
        await pilot.press("escape", "slash", *"!a100|h100", "enter")  # inverse: the rest
        assert shown_hosts(app) == ["l4-1", "a10-1"]
        await pilot.press("escape")
        assert shown_hosts(app) == ["a100-1", "h100-1", "l4-1", "a10-1"]


@pilot_test
async def test_a_filter_that_matches_nothing_says_so_on_the_map():
    """Not a blank map, which reads as a fleet gone."""
    async with settled_app((100, 30)) as (app, pilot):
        await pilot.press("slash", *"(no such", "enter")
        await pilot.pause()
        first = fleet(app).map.render_line(0).text
        assert fleet(app).map.lines == []
        assert first.startswith("nothing matches /(no such/ (esc clears the filter)")
        await pilot.press("escape")
        await pilot.pause()
        assert fleet(app).map.render_line(0).text.startswith("\u258ca100-1")


@pilot_test
async def test_filter_on_a_team_keeps_only_its_gpus():
    async with settled_app((160, 48)) as (app, pilot):
        await pilot.press("slash", *"speech", "enter")
        gpus = [line for line in fleet(app).map.lines if isinstance(line, GpuLine)]
        assert gpus and all(any(b.team == "speech" for b in g.blocks) for g in gpus)


@pilot_test
async def test_palette_jumps_to_a_host_and_to_a_queue():
    async with settled_app((160, 24), gpus=32) as (app, pilot):
        await pilot.press("z")  # one GPU per line: 40 lines, more than fit
        await palette(pilot, "host a10-2")
        screen = fleet(app)
        top, height = screen.map.scroll_offset.y, screen.map.size.height
        header = next(i for i, line in enumerate(screen.map.lines)
                      if isinstance(line, HostLine) and line.name == "a10-2")
        assert 0 < top <= header < top + height  # scrolled to it
        assert screen.map.cursor.host == "a10-2" and screen.map.cursor.gpu == 0
        assert screen.map.cursor_line == header + 1
        await palette(pilot, "queue 10g")
        assert screen.query_one("#queues").marked == "10g"


def test_among_texts_scored_alike_the_closest_is_the_one_whose_words_the_match_cuts_least():
    """Textual scores these pairs alike (and lists them as they come): a job's number, a
    command's word and a GPU's host order as a host's do (test_tui_cordons)."""
    for query, near, far in (("#1", "open job #1 train-12", "open job #12 train-1"),
                             ("compact o", "compact on", "compact off"),  # (then the shorter)
                             ("gpu a10", "cordon gpu a10-1 0", "cordon gpu a100-1 0")):
        matcher = Matcher(query)
        assert matcher.match(near) == matcher.match(far) > 0, (query, near, far)
        assert _distance(matcher, near) < _distance(matcher, far), (query, near, far)


def test_a_name_with_a_letter_two_in_lower_case_is_highlighted_and_ordered_as_written():
    """Textual matches a text's lower case, where 'İ' is two characters: the palette's
    highlight of the job ``İzmir`` read its offsets as the name's, one off after the İ, and
    past its end an IndexError ended the search."""
    matcher = Matcher("r")
    text = "open job #4 İzmir"
    highlighted = _highlight(matcher, text)
    assert [text[s.start:s.end] for s in highlighted.spans] == ["r"]
    near, far = "open job #4 İ a10-12", "open job #4 İ a100-1"  # (as long)
    matcher = Matcher("a10")
    assert matcher.match(near) == matcher.match(far) > 0
    assert _distance(matcher, near) < _distance(matcher, far)


@pilot_test
async def test_a_long_querys_hits_keep_textuals_order_as_the_ties_are_nudged():
    """The palette nudges its hits' scores to order the ties (``commands.TIE_NUDGE``), less
    the further down our order, which follows Textual's score: a hit scored lower never goes
    over one scored higher, whatever the query's length. (A note feared it would past about
    390 characters, where two of Textual's scores may differ by less than the nudge.) Two
    names of the query's 2000 distinct characters, one with 6 runs broken in a word and 154
    words, the other 5 and 168: one way each to match them, scored 3978.992 and 3978.99200025
    by Textual's score, 6e-11 of them apart, the first nudged down less than the second."""
    query = "".join(chr(0x4E00 + i) for i in range(2000))

    def broken(runs: int, words: int) -> str:
        """The query, ``x`` in every tenth gap ``runs`` times, then a space ``words`` times."""
        name = list(query)
        for n, gap in enumerate(range(10 * (runs + words), 0, -10)):
            name.insert(gap, " " if n < words else "x")
        return "".join(name)

    async with settled_app((120, 36)) as (app, pilot):
        model = fleet(app).model
        jobs = model.store.jobs
        model.store = dataclasses.replace(model.store, jobs=(
            dataclasses.replace(jobs[0], name=broken(5, 168)),
            dataclasses.replace(jobs[1], name=broken(6, 154))) + jobs[2:])
        hits = [hit async for hit in FleetCommands(app.screen).search(query)]
    shown = [FuzzySearch().score(hit.text, [hit.text.index(c) for c in query])  # (its one way)
             for hit in sorted(hits, key=lambda h: h.score, reverse=True)]  # (as Textual sorts)
    assert 0 < shown[0] - shown[-1] < 1e-10 * shown[0], shown
    assert shown == sorted(shown, reverse=True), shown


async def palette_hits(name: str, query: str) -> Tuple[List[str], Job]:
    """The palette's hits for ``query`` on the settled app whose first job is named ``name``,
    and that job."""
    async with settled_app((120, 36)) as (app, _pilot):
        model = fleet(app).model
        job = dataclasses.replace(model.store.jobs[0], name=name)
        model.store = dataclasses.replace(model.store, jobs=(job,) + model.store.jobs[1:])
        return [hit.text async for hit in FleetCommands(app.screen).search(query)], job


@pilot_test
async def test_a_name_with_countless_ways_to_match_is_scored_by_its_first(monkeypatch):
    """Textual's fuzzy search scores every way a query's characters are found in order in a
    text: ``abab`` in a job named ``a-b-`` 32 times is tens of thousands of ways, and 128
    times took 30 s (a name may be 4096 characters), the palette and the TUI stopped. Past
    MATCH_WAYS the palette scores the first way only, and still finds the job."""
    scored = []
    score = FuzzySearch.score
    monkeypatch.setattr(FuzzySearch, "score", lambda self, text, offsets: (
        scored.append(text), score(self, text, offsets))[1])
    hits, job = await palette_hits("a-b-" * 32, "abab")
    assert "open job #%d %s" % (job.id, "a-b-" * 32) in hits
    mine = [text for text in scored if "a-b-" * 32 in text]
    assert 0 < len(mine) < 10, len(mine)  # (each of its entries once)


@pilot_test
async def test_a_name_textual_would_look_through_at_length_is_scored_by_its_first(monkeypatch):
    """Textual's search looks at each of a character's places once for each partial match
    before it, also at those it cannot take: ``abc`` in ``a b- c…c a…a b…b`` (3600 c's, 118
    a's and b's: 3839 characters) is 17,643 partial matches, but 50 million places looked at,
    seconds with the TUI stopped. MATCH_WAYS counts the places, so Textual never searches it."""
    name = "ab-" + "c" * 3600 + "a" * 118 + "b" * 118
    searched = []
    match = FuzzySearch.match
    monkeypatch.setattr(FuzzySearch, "match", lambda self, query, text: (
        searched.append(text), match(self, query, text))[1])
    hits, job = await palette_hits(name, "abc")
    assert "open job #%d %s" % (job.id, name) in hits
    assert not [text for text in searched if name in text]


@pilot_test
async def test_a_long_name_pasted_whole_into_the_palette_finds_its_job():
    """Textual's search calls itself once for each character of the query, and past about
    1000 (Python's bound on it) fails: the palette logs a provider's error and lists none
    of its hits, so a job's long name pasted whole found nothing. Past MATCH_LENGTH
    characters a text is scored by its first match."""
    name = "".join(chr(0x4E00 + i) for i in range(1500)) + " end"
    hits, job = await palette_hits(name, name[:-4] + "d")
    assert "open job #%d %s" % (job.id, name) in hits


def test_a_long_query_is_looked_for_in_a_long_name_within_the_bound():
    """What the palette looks through before it leaves a text to Textual's search is bounded
    as that search is: 300 ``a`` in ``a-`` 2048 times, or those and a ``b`` it has not, are
    300 characters of some 1900 places each, and were looked through whole (seconds, the
    TUI stopped). Counted in the lines run in commands.py, not in time."""
    lines = 0

    def trace(frame, event, _arg):
        nonlocal lines
        if frame.f_code.co_filename != commands.__file__:
            return None
        lines += event == "line"
        return trace

    text = "a-" * 2048
    for query, matched in (("a" * 300, True), ("a" * 300 + "b", False)):
        lines = 0
        sys.settrace(trace)
        try:
            score, offsets = commands._match(Matcher(query), text)
        finally:
            sys.settrace(None)
        assert (score > 0, len(offsets)) == ((True, 300) if matched else (False, 0))
        assert lines < 10 * commands.MATCH_WAYS, (query[-3:], lines)


def test_a_text_scored_by_its_first_match_matches_where_textual_finds_one(monkeypatch):
    """With every text past MATCH_WAYS: a text matches where Textual's search finds a match,
    at the places it would look, scored no higher than its best."""
    monkeypatch.setattr(commands, "MATCH_WAYS", 0)
    rng = random.Random(3)
    for _ in range(2000):
        text = "".join(rng.choice("ab- #1") for _ in range(rng.randint(1, 14)))
        query = "".join(rng.choice("ab-1") for _ in range(rng.randint(1, 5)))
        matcher = Matcher(query)
        best, _ = matcher.fuzzy_search.match(query, text)
        first, offsets = commands._match(matcher, text)
        assert (first > 0) == (best > 0) and first <= best, (query, text)
        assert "".join(text[o] for o in offsets) == (query if first else ""), (query, text)


@pilot_test
async def test_palette_jumps_to_a_running_job_on_its_gpu():
    async with settled_app((160, 48)) as (app, pilot):
        screen = fleet(app)
        job = next(j for j in screen.model.store.jobs if j.slot and j.slot.host == "a10-1")
        await palette(pilot, "job #%d %s" % (job.id, job.name))
        line = screen.map.lines[screen.map.cursor_line]
        assert isinstance(line, GpuLine) and line.host == "a10-1"
        assert line.index == job.slot.gpus[0]
        assert screen.map.chosen()[1].job_id == job.id  # on the job's own slice


@pilot_test
async def test_theme_switch_by_palette_and_by_key():
    async with settled_app((120, 30)) as (app, pilot):
        assert app.theme == "dark"
        await palette(pilot, "theme light")
        assert app.theme == "light"
        assert fleet(app).map.paint.slices.free == "#dde1e6"  # the map repainted
        await pilot.press("t")
        assert app.theme == "nord"  # the next file, by name


@pilot_test
async def test_key_remapped_from_config():
    async with settled_app((120, 30), keys=(("fleet.filter", "f"), ("app.quit", "x"))) as (
            app, pilot):
        filter_box = app.screen.query_one("#filter")
        await pilot.press("slash")
        assert not filter_box.display  # / is no longer the filter
        await pilot.press("f")
        assert filter_box.display and filter_box.has_focus
        await pilot.press("escape")
        hints = dict(app.screen.query_one("Header").info.hints)
        assert hints["f"] == "filter" and hints["x"] == "quit" and "q" not in hints
        await pilot.press("q")
        assert app.is_running
        await pilot.press("x")
    assert not app.is_running


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


def test_unknown_binding_id_in_config_points_at_its_line(tmp_path):
    path = _write(tmp_path, '[tui]\ntheme = "light"\n\n[tui.keys]\n'
                  '"fleet.filter" = "f"\n"fleet.filtre" = "g"\n')
    with pytest.raises(ConfigError) as err:
        check_tui_settings(load_config(path), theme_names())
    assert str(err.value).startswith("%s:6: tui.keys: unknown binding id 'fleet.filtre'" % path)
    assert "fleet.filter" in str(err.value)  # the known ids are listed


def test_unknown_binding_id_inline_points_at_keys(tmp_path):
    path = _write(tmp_path, '[tui]\nkeys = { "nope" = "f" }\n')
    with pytest.raises(ConfigError, match=r":2: tui.keys: unknown binding id 'nope'"):
        check_tui_settings(load_config(path), theme_names())


def test_unknown_theme_points_at_its_line(tmp_path):
    path = _write(tmp_path, '\n[tui]\ntheme = "fractui-drak"\n')
    with pytest.raises(ConfigError, match=r":3: tui.theme: unknown theme 'fractui-drak'"):
        check_tui_settings(load_config(path), theme_names())


@pilot_test
async def test_a_reason_cut_in_the_queue_panel_is_read_whole_on_its_jobs_screen():
    """At 80x24 a pending job's line in the queue panel ends its reason in "…" at the panel's
    edge; ``tab`` to the panel and ``enter`` on the job open its screen, whose reason line
    folds it whole (the one way to a job's details, as from the jobs view and the map)."""
    reason = ("waiting: no GPU with 3 free compute slices on a host of model A100-SXM4-80GB "
              "in the fleet now (a100-1 gpu0 holds 2 free, a100-1 gpu1 is cordoned) END")
    async with settled_app((80, 24), reasons={27: reason}) as (app, pilot):
        await pilot.press("tab")
        assert fleet(app).query_one(QueuePanel).selected == 27
        row = next(line for line in screen_lines(app) if "#27" in line)
        assert row.endswith("…") and "END" not in " ".join(screen_lines(app)), row
        await pilot.press("enter")
        await settled(pilot)
        assert " ".join(" ".join(screen_lines(app)).split()).find(reason) > 0


@pilot_test
async def test_host_updates_from_another_thread_reach_the_map():
    async with settled_app((160, 48)) as (app, pilot):
        source = app.source
        before = next(s for s in fleet(app).statuses.values() if s.name == "l4-1")
        back = dataclasses.replace(before, state="online", error=None)
        thread = threading.Thread(target=source.changed, args=(back,))
        thread.start()
        thread.join()
        await pilot.pause(0.1)
        header = next(line for line in fleet(app).map.lines
                      if isinstance(line, HostLine) and line.name == "l4-1")
        assert header.state == "online" and header.error is None
        gpus = [line for line in fleet(app).map.lines
                if isinstance(line, GpuLine) and line.host == "l4-1"]
        assert gpus and not any(g.stale for g in gpus)


@pilot_test
async def test_compact_toggles_and_is_automatic_when_gpus_outnumber_rows():
    async with settled_app((160, 48)) as (app, pilot):  # 20 rows fit: one GPU per line
        assert not fleet(app).compact_now()
        await pilot.press("z")
        assert fleet(app).compact_now()
        assert len(fleet(app).map.lines) < 20
    small = frozen_app()
    async with small.run_test(size=(80, 24)) as pilot:
        await settled(pilot)
        assert fleet(small).compact_now()


@pytest.mark.parametrize("no_color", [True, False])
def test_under_no_color_the_compact_map_marks_each_teams_slices(monkeypatch, no_color):
    """NO_COLOR=1: Textual draws every colour as a grey, and the compact map (80x24: no
    labels) told the teams' slices apart only by greys a few shades apart. Each team's
    block carries its mark, the legend says whose: a100-1 gpu 2's 2g.20gb
    (#3, nlp), 1g.10gb (#4, vision), 3g.40gb (#2, speech); h100-1 gpu 0's 2g (vision), its
    idle 1g at 5 unmarked, its 1g at 6 (vision), its free slice 7 dotted (no profile fits
    there). In colour the map stays unmarked."""
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    else:
        monkeypatch.delenv("NO_COLOR", raising=False)

    @pilot_test
    async def drive():
        app = frozen_app()
        async with app.run_test(size=(80, 24)) as pilot:
            await settled(pilot)
            assert fleet(app).compact_now() and app.no_color == no_color
            lines = screen_lines(app)
            a100 = lines[next(i for i, x in enumerate(lines) if "a100-1" in x) + 2]
            h100 = lines[next(i for i, x in enumerate(lines) if "h100-1" in x) + 1]
            legend = next(x for x in lines if x.startswith(" team:"))
            if no_color:
                assert a100.startswith(" 2▏n  ▏v▏ ▏s  "), a100
                assert h100.startswith(" 0▏v  ▏ ▏ ▏ ▏ ▏v▏· "), h100  # (7: none fits)
                assert "v vision" in legend and "n nlp" in legend and "s speech" in legend
            else:
                assert a100.startswith(" 2▏   ▏ ▏ ▏  "), a100
                assert " vision " in legend and "v vision" not in legend, legend
    drive()


MORE_TEAMS = ("robotics", "genomics", "climate", "recsys", "platform", "interns")


@pytest.mark.parametrize("more", [5, 6])
@pilot_test
async def test_past_the_themes_colours_the_map_marks_each_teams_slices(more):
    """The theme has eight owner colours: a ninth team took the first's (interns vision's),
    and the two teams' slices looked alike on the map. Past the colours, each team's block
    carries its mark, as under NO_COLOR: in the compact map's blocks (80x24) and, where its
    name does not fit, in the full map's (160x48: a100-1 gpu 2's 1g of vision "1g v", a10-1
    gpu 1's share of speech "s"); the legend says whose. Eight teams stay unmarked."""
    async with settled_app((80, 24), more_teams=MORE_TEAMS[:more]) as (app, pilot):
        teams = [t.name for t in app.config.teams]
        paint = fleet(app).map.paint
        assert len(teams) == 3 + more and paint.marked == (more == 6)
        lines = screen_lines(app)
        a100 = lines[next(i for i, x in enumerate(lines) if "a100-1" in x) + 2]
        legend = next(x for x in lines if x.startswith(" team:"))
        if more == 6:
            assert paint.owner_colour("interns") == paint.owner_colour("vision")
            assert owner_marks(tuple(teams))["interns"] == "i"
            assert a100.startswith(" 2▏n  ▏v▏ ▏s  "), a100
            assert "v vision" in legend and "n nlp" in legend, legend
        else:
            assert len({paint.owner_colour(t) for t in teams}) == len(teams)
            assert a100.startswith(" 2▏   ▏ ▏ ▏  "), a100
            assert " vision " in legend and "v vision" not in legend, legend
        await pilot.resize_terminal(160, 48)
        await settled(pilot)
        assert not fleet(app).compact_now()
        lines = screen_lines(app)
        a100 = next(x for x in lines if x.startswith("   2 A100-80GB"))
        a10 = next(x for x in lines if x.startswith("   1 A10 "))
        if more == 6:
            assert "▏2g.20gb #3 nlp   ▏1g v   ▏" in a100 and a10.split()[2] == "s", (a100, a10)
        else:
            assert "▏2g.20gb #3 nlp   ▏1g.10gb▏" in a100 and a10.split()[2] != "s", (a100, a10)


def test_every_owner_has_a_mark_while_any_letter_or_digit_is_free():
    """An owner whose own characters and every digit were taken had no mark, 25 letters
    free: t0 … t11 marked t0 to t10 and left t11's slices unmarked, as idle, outside or free
    ones are under NO_COLOR. Each has a mark of its own while one of the 36 is free; past
    them, none (the legend says the name alone)."""
    owners = tuple("t%d" % i for i in range(12))
    marks = owner_marks(owners)
    assert all(marks[o] for o in owners), marks
    assert len({m.lower() for m in marks.values()}) == len(owners), marks
    many = owner_marks(tuple("t%d" % i for i in range(40)))
    assert sum(1 for m in many.values() if m) == 36, many


def test_the_example_config_tui_table_is_valid():
    check_tui_settings(load_config(os.path.join(REPO, "config.example.toml")), theme_names())


async def screenshot(pilot) -> None:
    """A screenshot taken from the palette, once it is saved or refused (a timer after the
    palette has closed takes it: a fixed 0.3 s was a guess a loaded machine may outlast)."""
    before = len(said(pilot.app))
    await palette(pilot, "Screenshot")
    await until(pilot, lambda: len(said(pilot.app)) > before, "the screenshot's notice")


@pytest.mark.parametrize("downloads", [True, False])
def test_the_palettes_screenshot_is_saved_and_says_where(tmp_path, monkeypatch, downloads):
    """Textual's "Screenshot" saves only in the Downloads folder, which a server seldom has:
    it said "Failed to save screenshot" and no reason. Saved in the current folder there, a
    new file of the admin's alone, and where it went said (plain: notices read no markup)."""
    home, here = tmp_path / "home", tmp_path / "here"
    home.mkdir()
    here.mkdir()
    if downloads:
        (home / "Downloads").mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))  # (no user-dirs.dirs)
    monkeypatch.chdir(here)
    folder = home / "Downloads" if downloads else here

    @pilot_test
    async def drive():
        async with settled_app((80, 24)) as (app, pilot):
            await screenshot(pilot)
            [shot] = os.listdir(folder)
            path = str(folder / shot)
            with open(path) as f:
                assert f.read().startswith("<svg")
            assert os.stat(path).st_mode & 0o777 == 0o600
            assert said(app) == ["screenshot saved to " + path]
            assert os.listdir(here if downloads else home) == []  # nowhere else

    drive()


def test_screenshots_in_the_same_second_are_each_saved_under_a_name_of_its_own(
        tmp_path, monkeypatch):
    """Named by the second (the app's clock, frozen here), a second screenshot in that second
    said "File exists" and was not saved: each is saved, a number after the second's name,
    and each says where it went. A link where a name would be is passed over, not followed."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    monkeypatch.chdir(tmp_path)

    @pilot_test
    async def drive():
        async with settled_app((80, 24)) as (app, pilot):
            await screenshot(pilot)
            [first] = os.listdir(tmp_path)
            stem = first[:-len(".svg")]
            os.symlink(tmp_path / "elsewhere", tmp_path / (stem + "-2.svg"))
            for _ in range(2):
                await screenshot(pilot)
            saved = [str(tmp_path / (stem + end)) for end in (".svg", "-3.svg", "-4.svg")]
            assert said(app) == ["screenshot saved to " + path for path in saved]
            for path in saved:
                with open(path) as f:
                    assert f.read().startswith("<svg")
            assert not os.path.exists(tmp_path / "elsewhere")

    drive()


@pilot_test
async def test_the_palettes_screenshot_says_why_it_could_not_be_saved(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()  # the current folder removed from under the TUI
    async with settled_app((80, 24)) as (app, pilot):
        await screenshot(pilot)
        assert said(app) == [
            "screenshot not saved: [Errno 2] No such file or directory"]


@pytest.mark.parametrize("pages", [0, 1])
def test_a_screenshot_cut_short_by_a_full_disk_is_removed_and_said_with_its_path(
        tmp_path, monkeypatch, small_fs, pages):
    """The current folder on a real tmpfs with no room, or a page, left: the screenshot's
    file is made, its write fails. Before, it said "not saved" and left the file there, empty
    or cut, under the name a good one takes; now it is removed, and its path said."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    here = small_fs / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    fill(small_fs / "filler")
    os.truncate(small_fs / "filler", os.path.getsize(small_fs / "filler") - pages * 4096)

    @pilot_test
    async def drive():
        async with settled_app((80, 24)) as (app, pilot):
            await screenshot(pilot)
            [words] = said(app)
            assert words.startswith("screenshot not saved to %s/fractui-" % here), words
            assert words.endswith(".svg: [Errno 28] No space left on device"), words
            assert os.listdir(here) == []

    drive()


@pilot_test
async def test_a_part_maximized_from_the_palette_is_put_back_when_the_focus_leaves_it():
    """The palette's "Maximize" shows the focused part alone; ``tab`` (or ``/``) then moved
    the focus to a part hidden under it, whose keys acted unseen: it is put back first."""
    async with settled_app((80, 24)) as (app, pilot):
        screen = fleet(app)
        await palette(pilot, "Maximize")
        assert screen.maximized is screen.map and app.focused is screen.map
        await pilot.press("down")  # the map's own keys: it stays alone
        await pilot.pause()
        assert screen.maximized is screen.map
        await pilot.press("tab")
        await pilot.pause()
        assert isinstance(app.focused, QueuePanel) and screen.maximized is None
        await pilot.press("J")
        await pilot.pause()
        jobs = app.screen
        await palette(pilot, "Maximize")
        assert jobs.maximized is jobs.table
        await pilot.press("slash")
        await pilot.pause()
        assert isinstance(app.focused, Input) and jobs.maximized is None
