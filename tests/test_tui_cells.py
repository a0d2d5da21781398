"""Text in any script keeps every column where it belongs: measured in terminal cells, as Rich
measures and draws it, never in characters. An accent written as a mark ("e\u0301"), a
Devanagari or Thai vowel sign and a virama take no cell; a CJK or Hangul character, or an emoji
(with its zero-width joiners and variation selectors), takes two. The jobs view, the queue
panel, the slice map's labels and the CLI's tables pad and cut by cells; the tests' own reading
of the screen (screen_lines) places each run of text at its cell too."""

from __future__ import annotations

import dataclasses

import pytest
from rich.cells import cell_len
from rich.text import Text
from textual.app import App, ComposeResult
from textual.widgets import Static

from fractui.cells import cut, each_cell, padded
from fractui.config import Config, TuiSettings
from fractui.store.model import PENDING
from fractui.terminal import table
from fractui.tui.app import FractuiApp
from fractui.tui.bars import render
from fractui.tui.model import GHOST, Block
from fractui.tui.sample import NOW, QUEUES, TEAMS, sample_fleet
from fractui.tui.source import Source
from tests.test_tui_model import PAINT, build, l4
from tests.tui_frozen import LOGS, STATES, pilot_test, screen_lines, settled

# (what, text, its cells)
SCRIPTS = (
    ("Latin, accents as marks", "cafe\u0301 re\u0301sume\u0301", 11),
    ("Devanagari", "प्रशिक्षण", 6),
    ("Thai", "ฝึกโมเดล", 7),
    ("CJK", "训练模型", 8),
    ("Hangul", "학습", 4),
    ("emoji with a joiner", "👩\u200d💻 run", 6),
    ("emoji with a variation selector", "❤\ufe0f fit", 6),
)
IDS = [s[0] for s in SCRIPTS]


@pytest.mark.parametrize("what,text,width", SCRIPTS, ids=IDS)
def test_text_is_split_padded_and_cut_by_cells(what, text, width):
    assert cell_len(text) == width
    split = each_cell(text)
    assert len(split) == width and "".join(split) == text
    assert all(cell_len(c) == (0 if c == "" else 1 + (split[i + 1:i + 2] == [""]))
               for i, c in enumerate(split))
    assert cell_len(padded(text, width + 3)) == width + 3
    assert padded(text, width + 3).startswith(text)
    for w in range(width):
        assert cell_len(padded(text, w)) == w
        short = cut(text, w)
        assert cell_len(short) <= w and (w == 0 or short.endswith("…"))
    assert cut(text, width) == text


def test_a_mark_joins_its_letter_and_a_wide_character_covers_two_cells():
    assert each_cell("e\u0301x") == ["e\u0301", "x"]
    assert each_cell("日本") == ["日", "", "本", ""]
    assert each_cell("👩\u200d💻!") == ["👩\u200d💻", "", "!"]
    assert cut("日本語", 4) == "日…"  # never half a character
    assert padded("日本語", 3) == "日 "


class Runs(App[None]):
    """Each script's text in its own style, then a bar and a word in others: three runs of
    text on each line, each placed at its cell by the screenshot."""

    def compose(self) -> ComposeResult:
        yield Static(Text("\n").join(Text.assemble((t, "bold"), ("│", "red"), ("after", "italic"))
                                     for _, t, _ in SCRIPTS))


@pilot_test
async def test_screen_lines_puts_each_run_of_text_at_its_cell():
    app = Runs()
    async with app.run_test(size=(40, len(SCRIPTS) + 2)) as pilot:
        await pilot.pause()
        lines = screen_lines(app)
    assert lines[:len(SCRIPTS)] == [t + "│after" for _, t, _ in SCRIPTS]


def named_app(names: dict[int, str]) -> FractuiApp:
    """The sample fleet, jobs renamed (by id); the others keep their ASCII names."""
    fleet = sample_fleet(16, states=STATES)
    jobs = tuple(dataclasses.replace(j, name=names[j.id]) if j.id in names else j
                 for j in fleet.store.jobs)
    return FractuiApp(Source(fleet.statuses, dataclasses.replace(fleet.store, jobs=jobs),
                             logs=LOGS),
                      Config(path=None, queues=QUEUES, teams=TEAMS, tui=TuiSettings()),
                      clock=lambda: NOW)


def column_at(line: str, text: str) -> int:
    """The cell where ``text`` starts in a line of the screen."""
    return cell_len(line[:line.index(text)])


@pilot_test
async def test_the_jobs_view_and_the_queue_panel_keep_columns_under_names_in_any_script():
    fleet = sample_fleet(16, states=STATES)
    pending = [j for j in fleet.store.jobs if j.state == PENDING]
    # every other pending job (and a running one) named in a script, the rest left ASCII
    names = {j.id: "%s-%d" % (SCRIPTS[k % len(SCRIPTS)][1], j.id)
             for k, j in enumerate(pending[::2])}
    names[fleet.store.jobs[0].id] = SCRIPTS[0][1]
    app = named_app(names)
    async with app.run_test(size=(160, 50)) as pilot:
        await settled(pilot)
        # the queue panel: each pending job's queue starts in one column
        panel = {j.id: next((ln for ln in screen_lines(app) if " #%-4d " % j.id in ln), None)
                 for j in pending}
        shown = {i: ln for i, ln in panel.items() if ln is not None}
        assert len(shown) >= 4 and set(shown) & set(names), shown
        queues = {column_at(ln[ln.index(" #%-4d " % i):], " %s " % next(
            j.queue for j in pending if j.id == i)) for i, ln in shown.items()}
        assert len(queues) == 1, shown

        await pilot.press("J")
        await settled(pilot)
        lines = screen_lines(app)
        head = next(ln for ln in lines if " state" in ln and " name" in ln)
        state = column_at(head, " state") + 1
        rows = [ln for ln in lines if any(" %s " % n in ln for n in names.values())]
        assert len(rows) == len(names)
        for row in rows:
            word = "".join(each_cell(row)[state:state + 9]).split(" ")[0]
            assert word in ("pending", "running", "placed", "stopping"), (row, word)


@pytest.mark.parametrize("what,text,width", SCRIPTS, ids=IDS)
def test_a_shares_label_in_any_script_keeps_the_bar_its_width(what, text, width):
    (gpu,) = build([l4()]).hosts["h"].gpus
    ghost = dataclasses.replace(gpu, blocks=gpu.blocks + (Block(0.0, 0.5, GHOST, text),))
    plain = dataclasses.replace(gpu, blocks=gpu.blocks + (Block(0.0, 0.5, GHOST, "x" * width),))
    for line in (ghost, dataclasses.replace(ghost, mig=True, slices=8)):
        strip = render(line, 120, PAINT)
        assert strip.cell_length == 120
        drawn = "".join(s.text for s in strip)
        assert "▶" + text in drawn  # the label whole, the figures after it where they were
        assert column_at(drawn, " GiB") == column_at(
            "".join(s.text for s in render(plain, 120, PAINT)), " GiB")


def test_the_cli_s_tables_pad_and_cut_by_cells():
    rows = [[t, "running"] for _, t, _ in SCRIPTS] + [["plain", "done"]]
    lines = table(["NAME", "STATE"], rows, [40, 10], None)
    assert len({column_at(ln, "  running" if "running" in ln else "  ") for ln in lines[1:-1]}
               ) == 1
    assert {column_at(ln, "running") for ln in lines[1:-1]} == {column_at(lines[0], "STATE")}
    for ln in table(["NAME", "STATE"], rows, [5, 10], 12):  # capped, then cut to 12 cells
        assert cell_len(ln) <= 12, ln
