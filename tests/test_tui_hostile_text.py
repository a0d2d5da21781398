"""Text the admin does not write, drawn as text: a researcher's job name, argv, cwd, env and
image, the scheduler's reasons, a host's error (an SSH server's words), a job launched by hand on
a host, and what the admin types into the filter and the log search. Rich and Textual read
square brackets as markup: drawn as markup such text could end the app (an unbalanced closing
tag), vanish (a style tag) or be an action on click (``[@click=app.quit]``). Every screen that
shows it is drawn with it in, and it must be there as written."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from typing import Any

import pytest
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from fractui.config import Config, TuiSettings
from fractui.tui.app import FractuiApp
from fractui.tui.controls import without_controls
from fractui.tui.jobs import ConfirmScreen, JobScreen
from fractui.tui.jobs_view import JobsScreen
from fractui.tui.gpu_screen import GpuScreen
from fractui.tui.sample import NOW, QUEUES, TEAMS, sample_fleet
from fractui.tui.source import Source
from tests.test_tui_demo import Terminal
from tests.tui_frozen import LOGS, STATES, pilot_test, screen_lines, settled

# an unbalanced closing tag for each parser, a style, and a click action
HOSTILE = ("[/]", "[/bold]", "[b]x[/b]", "[@click=app.quit]q[/]", "[$accent]v", ":smile:")
# every screen visited with each, in the slow suite; with an unbalanced tag and an action in
# the default one (each visit is a whole app)
VISITED = [t if t in ("[/]", "[@click=app.quit]q[/]") else
           pytest.param(t, marks=pytest.mark.slow) for t in HOSTILE]


def hostile_app(text: str) -> FractuiApp:
    """The sample fleet with ``text`` in everything others write, marked by where it came
    from (N a job's name, A its argv, I its image, V its env, R a reason, E a host's error, H
    a job launched by hand, L its output), so each screen is checked for its own."""
    states = dict(STATES, **{"l4-1": ("offline", "ssh: E" + text)})
    fleet = sample_fleet(16, states=states)
    a10 = next(s for s in fleet.statuses if s.name == "a10-1")
    a10.jobs["j99"] = {"id": "j99", "key": "by-hand", "name": "H" + text, "gpus": [0],
                       "instance": None, "memory_mib": 64, "state": "running", "pid": 4099,
                       "created_at": NOW - 30}
    jobs = tuple(dataclasses.replace(
        j, name="N%d%s" % (j.id, text), argv=("A" + text,) + tuple(j.argv), env={"V": text},
        image="I" + text, reason="R" + text if j.reason else None)
        for j in fleet.store.jobs)
    for status in fleet.statuses:  # the agents' records of the store's jobs, by key
        for record in status.jobs.values():
            job = next((j for j in jobs if j.key(fleet.store.uid) == record["key"]), None)
            record["name"] = job.name if job else record["name"]
    store = dataclasses.replace(fleet.store, jobs=jobs)
    logs = {"a100-1/j1": ["L" + text + line for line in LOGS["a100-1/j1"]] + [
        "\x1b[1;31mERROR\x1b[0m in \x1b]8;;http://x\x1b\\a link\x1b]8;;\x1b\\ (colours)",
        "step 1/3\rstep 2/3\rstep 3/3 done\x1b\x1b[0m[201~\r"]}  # (CRLF output, split)
    source = Source(fleet.statuses, store, logs=logs, usage=fleet.usage())
    config = Config(path=None, queues=QUEUES, teams=TEAMS, tui=TuiSettings())
    return FractuiApp(source, config, clock=lambda: NOW)


def shown(app: Any) -> str:
    return "\n".join(screen_lines(app))


async def _visit(text: str, size: tuple[int, int]) -> list[str]:
    """Each screen that shows such text, drawn: what it should show and does not."""
    app = hostile_app(text)
    missing = []

    def check(where: str, *marked: str) -> None:
        drawn = shown(app)
        missing.extend("%s: %s" % (where, m) for m in marked if m not in drawn)

    pending = next(j for j in app.source.read_store().jobs if j.reason)
    async with app.run_test(size=size) as pilot:
        await settled(pilot)
        check("fleet", "E" + text, "R" + text)
        await pilot.press("slash", *text, "enter")
        await settled(pilot)
        check("fleet, filtered", "filter /%s/" % text)
        await pilot.press("escape")
        app.open_jobs()
        await settled(pilot)
        assert isinstance(app.screen, JobsScreen)
        check("jobs view", "N1" + text, "H" + text, "R" + text)
        app.pop_screen()
        app.open_job(1)
        await settled(pilot)
        assert isinstance(app.screen, JobScreen)
        check("job screen", "N1" + text, "A" + text, "I" + text, "V=" + text,
              "L" + text, "ERROR in a link (colours)",  # a job's escapes: gone whole
              "step 3/3 done\n")  # a progress bar's last step, alone on its line
        await pilot.press("slash", *text, "enter")
        await settled(pilot)
        check("job screen, searched", "search /%s/" % text)
        await pilot.press("s")
        await settled(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        check("stop's question", "Stop job #1 N1%s" % text)
        await pilot.press("escape")
        app.pop_screen()
        app.open_job(pending.id)
        await settled(pilot)
        check("a waiting job's screen", "R" + text)
        app.pop_screen()
        app.open_gpu("a10-1", 0)
        await settled(pilot)
        assert isinstance(app.screen, GpuScreen)
        check("GPU screen", "H" + text)
        app.pop_screen()
        await pilot.press("colon", *"N1")
        await settled(pilot)
        check("command palette", "N1" + text)
    return missing


@pytest.mark.parametrize("text", VISITED)
@pilot_test
async def test_text_from_others_is_drawn_as_written_never_read_as_markup(text):
    assert await _visit(text, (200, 50)) == []


@pilot_test
async def test_at_80x24_no_such_text_ends_the_app():
    await _visit("[/]", (80, 24))  # cut short here and there, but drawn


# an OSC 52 (sets the terminal's clipboard), a CSI moving the cursor, the same as one C1 byte
SEQUENCES = ("\x1b]52;c;SGk=\x1b\\", "\x1b[201;202H", "\x9b201;203H")


def test_control_sequences_in_others_text_never_reach_the_terminal():
    """The app in a real terminal (a pty), drawing the fleet and the jobs view with each
    sequence in every text others write: the terminal gets the text after each ESC, never the
    sequence."""
    text = "".join(SEQUENCES)
    term = Terminal([sys.executable, "-c", "import sys\nfrom tests.test_tui_hostile_text import "
                     "hostile_app\nhostile_app(sys.argv[1]).run()", text], cols=200, rows=50)
    try:
        assert term.read_until(re.escape(b"R]52;c;SGk=\\[201;202H201;203H"), 30), \
            term.output[-3000:]  # a waiting job's reason, drawn as text
        os.write(term.master, b"J")
        assert term.read_until(re.escape(b"N1]52;c;SGk="), 30), term.output[-3000:]
        for _ in range(2):  # back from the jobs view, then out
            os.write(term.master, b"q")
            term.read_until(b"(?!)", 1)
        term.drain(20)
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
    for sequence in SEQUENCES:
        assert sequence.encode() not in term.output
    assert term.proc.returncode == 0


def test_a_line_loses_its_control_characters_and_keeps_its_width():
    line = Strip([Segment("a\x1b]52;c;x\x07b", Style(bold=True)),
                  Segment("\x9bc\x7f\x00\u202e")])  # the last turns what follows backwards
    clean = without_controls(line)
    assert [s.text for s in clean] == ["a]52;c;xb", "c"]
    assert sum(s.cell_length for s in clean) == line.cell_length == 10  # controls: no cells
    assert without_controls(clean) is clean  # nothing to take: the same line


@pilot_test
async def test_an_argv_with_newlines_stays_on_its_one_row():
    """A word of the command holding newlines is shown on the argv row, each newline a space,
    not spread over the rows below it."""
    app = hostile_app("one\ntwo\nthree")
    async with app.run_test(size=(160, 40)) as pilot:
        await settled(pilot)
        app.open_job(1)
        await settled(pilot)
        lines = screen_lines(app)
        at = next(i for i, line in enumerate(lines) if line.lstrip().startswith("argv"))
        assert "'Aone two three'" in lines[at], lines[at]
        assert "three'" not in lines[at + 1], lines[at + 1]  # no part of it below


@pilot_test
async def test_a_notice_shows_text_as_written():
    """A search that matches nothing says so in a notice, the pattern in it as typed."""
    app = hostile_app("x")
    async with app.run_test(size=(120, 36), notifications=True) as pilot:
        await settled(pilot)
        app.open_job(1)
        await settled(pilot)
        await pilot.press("slash", *"zz[/]", "enter")
        await settled(pilot)
        assert "no line matches /zz[/]/" in shown(app)


@pilot_test
async def test_y_copies_a_line_of_output_without_any_control_in_it():
    app = hostile_app("x")
    async with app.run_test(size=(120, 36)) as pilot:
        await settled(pilot)
        app.open_job(1)
        await settled(pilot)
        await pilot.press("y")  # the cursor follows: the last line
        assert app.clipboard == "step 3/3 done"
