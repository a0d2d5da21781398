"""Themes as files: the shipped ones (top-level themes/, in the package as fractui/themes), the
admin's own from $XDG_CONFIG_HOME/fractui/themes, each checked with file:line errors and held
to one rule of readability; a broken file is left out and said, never fatal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest
from rich.color import EIGHT_BIT_PALETTE
from textual.theme import BUILTIN_THEMES

from fractui.tui.colours import contrast, distance, rgb, xterm256
from fractui.tui.theme_file import MIN_STATE_DISTANCE
from fractui.tui.themes import (broken_themes, builtin_themes, loaded_themes, shipped_dir,
                                theme_files, theme_names)
from tests.cli_run import leaks, subprocess_run
from tests.conftest import REPO
from tests.tui_frozen import frozen_app, pilot_test, said, settled

SHIPPED = ("colourblind", "dark", "light", "nord", "solarized-dark")
GOOD = open(os.path.join(REPO, "themes", "dark.toml"), encoding="utf-8").read().replace(
    'name = "dark"', 'name = "mine"')  # a copy of dark, as an admin would start one


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    folder = tmp_path / "fractui" / "themes"
    folder.mkdir(parents=True)
    return folder


def test_every_shipped_theme_loads_from_the_top_level_folder(user_dir):
    assert sorted(builtin_themes()) == list(SHIPPED)
    assert broken_themes() == []
    # the package's folder is the top-level one (an editable install reads the tree's files)
    assert os.path.samefile(shipped_dir(), os.path.join(REPO, "themes"))
    assert set(SHIPPED) <= set(theme_names())


@pytest.mark.parametrize("name", SHIPPED)
def test_the_fourth_owner_is_not_the_colour_of_a_slice_being_made(name):
    slices = builtin_themes()[name].slices
    assert distance(slices.owners[3], slices.placing) >= MIN_STATE_DISTANCE
    assert xterm256(slices.owners[3]) != xterm256(slices.placing)


def _nearest_xterm(colour: str) -> int:
    """The nearest of xterm's fixed colours (16-255: the 16 below are the terminal's own)."""
    r, g, b = rgb(colour)
    return min(range(16, 256), key=lambda n: sum(
        (x - y) ** 2 for x, y in zip((r, g, b), EIGHT_BIT_PALETTE[n])))


@pytest.mark.parametrize("name", SHIPPED)
def test_owner_colours_stay_distinct_in_256_colours(name):
    owners = builtin_themes()[name].slices.owners
    assert len({xterm256(c) for c in owners}) == len(owners)  # what Textual writes there
    assert len({_nearest_xterm(c) for c in owners}) == len(owners)  # the nearest, too


@pytest.mark.parametrize("name", SHIPPED)
def test_text_reads_on_every_ground(name):
    t = builtin_themes()[name].theme
    for ground in (t.background, t.surface, t.panel):
        assert contrast(t.foreground, ground) >= 4.5


def _write(folder, name: str, text: str) -> str:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return str(path)


BROKEN = [
    # (what is written in place of a line of dark.toml, or appended, and the error)
    ('primary = "#61afef"', 'primary = "#61afeg"', 6,
     'colors.primary must be a colour as #rrggbb, got \'#61afeg\''),
    ('primary = "#61afef"', 'primry = "#61afef"', 6,
     "unknown key 'primry' in [colors] (did you mean 'primary'?"),
    ('foreground = "#d7dae0"', 'foreground = "#3a3f4b"', 12,
     "colors.foreground #3a3f4b on colors.background #16181d reads at"),
    ('placing = "#ffffff"', 'placing = "#e5c07b"', 19, "slices.owners[3] #e5c07b looks like "
     "slices.placing #e5c07b (delta E 0; at least 20)"),
    ('free = "#2a2e36"', 'free = "#181a1f"', 21,
     "slices.free #181a1f hardly shows on colors.background #16181d (delta E 1; at least 8)"),
    ('dark = true', 'dark = "yes"', 3, "dark must be a boolean, got a string"),
    ('name = "mine"', 'name = "my dark"', 2, "name must be 1 to 64 of"),
    ('stale = "#3a3f4b"', 'stale = ', 26, "invalid TOML: "),
]


@pytest.mark.parametrize("old,new,line,message", BROKEN)
def test_a_broken_theme_file_is_said_at_its_line_and_the_others_load(user_dir, old, new, line,
                                                                     message):
    assert old in GOOD
    path = _write(user_dir, "broken.toml", GOOD.replace(old, new))
    [err] = broken_themes()
    assert (err.path, err.line) == (path, line), str(err)
    assert message in err.message
    assert str(err).startswith("%s:%d: " % (path, line))
    assert sorted(builtin_themes()) == list(SHIPPED)  # the shipped ones are all there


def test_a_theme_file_that_lacks_a_table_names_what_it_needs(user_dir):
    path = _write(user_dir, "half.toml", GOOD.split("[slices]")[0])
    [err] = broken_themes()
    assert str(err) == ("%s: a theme file lacks slices (it needs: name, dark, colors, slices)"
                        % path)


def test_a_fifo_or_a_folder_that_is_a_file_is_said_and_never_read(user_dir, tmp_path,
                                                                     monkeypatch):
    fifo = str(user_dir / "pipe.toml")
    os.mkfifo(fifo)  # opening it to read would wait for a writer forever
    [err] = broken_themes()
    assert str(err) == "%s: not a regular file" % fifo
    assert sorted(loaded_themes()) == list(SHIPPED)
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "fractui").write_text("a file where the folder would be")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "plain"))
    [err] = broken_themes()
    assert str(err) == "%s: not a directory" % (tmp_path / "plain" / "fractui" / "themes")
    assert sorted(loaded_themes()) == list(SHIPPED)


def test_a_theme_another_user_could_change_is_said_and_never_read(user_dir):
    """A theme decides what the fleet looks like (which colour is free, which is a team's):
    one another user could rewrite is refused as the config is, the others load."""
    path = _write(user_dir, "mine.toml", GOOD)
    os.chmod(path, 0o666)
    [err] = broken_themes()
    assert str(err) == ("%s: refusing theme file %s: %s is writable by its group and all users "
                        "(mode 0666), who could replace what fractui reads there; fix it with: "
                        "chmod go-w %s" % (path, path, path, path))
    assert sorted(loaded_themes()) == list(SHIPPED)


def test_the_admins_theme_loads_and_may_replace_a_shipped_one(user_dir):
    _write(user_dir, "mine.toml", GOOD)
    _write(user_dir, "nord.toml", GOOD.replace('name = "mine"', 'name = "nord"').replace(
        '"#61afef", "#98c379"', '"#61afef", "#00ff00"'))
    twin = _write(user_dir, "twin.toml", GOOD)
    themes = loaded_themes()
    assert themes["mine"].slices == builtin_themes()["dark"].slices
    assert themes["nord"].slices.owners[1] == "#00ff00"  # the admin's nord, not ours
    [err] = broken_themes()
    assert err.path == twin and "theme 'mine' is defined already, by " in err.message
    assert [(f.name, f.shipped) for f in theme_files() if f.theme][-2:] == [
        ("mine", False), ("nord", False)]


def test_fractui_themes_lists_what_loaded_and_says_what_did_not(tmp_path):
    folder = tmp_path / "fractui" / "themes"
    folder.mkdir(parents=True)
    _write(folder, "mine.toml", GOOD)
    _write(folder, "dark.toml", GOOD.replace('name = "mine"', 'name = "dark"'))
    bad = _write(folder, "bad.toml", GOOD.replace('primary = "#61afef"', 'primary = 3'))
    run = subprocess_run(["themes"], {"XDG_CONFIG_HOME": str(tmp_path)})
    assert run.returncode == 2, run.stderr
    lines = run.stdout.splitlines()
    assert [line[2:].split()[0] for line in lines[:-1]] == [*SHIPPED, "dark", "mine"]
    assert lines[-1] == "  your themes: %s/*.toml" % folder
    # the one in use (the default, as there is no config) is the admin's dark
    assert lines[1].startswith("  dark ") and lines[1].endswith("  (replaced by yours)")
    assert lines[5].startswith("* dark ") and " yours " in lines[5]
    assert run.stderr == "fractui: theme left out: %s:6: colors.primary must be a string, " \
                         "got an integer\n" % bad
    assert not leaks(run.stderr)
    # --json says the same on stderr: an exit 2 never comes without what and where
    listed = subprocess_run(["themes", "--json"], {"XDG_CONFIG_HOME": str(tmp_path)})
    assert listed.returncode == 2 and listed.stderr == run.stderr
    errors = [t["error"] for t in json.loads(listed.stdout)["themes"] if t["error"]]
    assert errors == [run.stderr[len("fractui: theme left out: "):-1]]
    good = subprocess_run(["themes", "--json"], {"XDG_CONFIG_HOME": str(tmp_path / "none")})
    assert good.returncode == 0 and '"solarized-dark"' in good.stdout
    config = tmp_path / "textual.toml"  # one of Textual's own themes, which no file holds
    config.write_text('[tui]\ntheme = "textual-dark"\n')
    theirs = subprocess_run(["--config", str(config), "themes"],
                            {"XDG_CONFIG_HOME": str(tmp_path / "none")})
    assert theirs.returncode == 0 and "* textual-dark" in theirs.stdout, theirs
    assert "one of Textual's own" in theirs.stdout


@pilot_test
async def test_the_tui_starts_with_a_broken_theme_file_and_says_so(user_dir):
    _write(user_dir, "mine.toml", GOOD)
    bad = _write(user_dir, "bad.toml", GOOD.replace('name = "mine"', 'name = "bad"').replace(
        'primary = "#61afef"', 'primary = "#61afefff"'))
    app = frozen_app(theme="mine")
    async with app.run_test(size=(120, 40)) as pilot:
        await settled(pilot)
        assert app.theme == "mine"
        shown = said(app)
        assert any(m.startswith("%s:6: colors.primary must be a colour" % bad) for m in shown)
        await pilot.press("t")  # the next theme: every one that loaded, the admin's included
        assert app.theme == "colourblind"


def test_a_built_sdist_holds_the_themes(tmp_path):
    """Built from a checkout (git archive: the link into the package as git keeps it)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", REPO, "archive", "--format=tar", "HEAD"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "x", "-C", str(tree)], input=archive, check=True)
    for name in os.listdir(os.path.join(REPO, "themes")):  # the tree as it is now
        (tree / "themes" / name).write_bytes(open(os.path.join(REPO, "themes", name),
                                                  "rb").read())
    out = tmp_path / "dist"
    subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta; "
                    "print(build_meta.build_sdist(sys.argv[1]))", str(out)], cwd=tree,
                   check=True, capture_output=True)
    [sdist] = os.listdir(out)
    with tarfile.open(out / sdist) as tar:
        held = {m.name.partition("/")[2]: m for m in tar.getmembers()}
    for name in SHIPPED:
        member = held["fractui/themes/%s.toml" % name]
        assert member.isfile()  # the file itself, not the link


@pytest.mark.parametrize("name", ["nord", "solarized-dark"])
def test_the_palettes_admins_know_at_80x24(snap_compare, name):
    assert snap_compare(frozen_app(theme=name), terminal_size=(80, 24), run_before=settled)


@pytest.mark.parametrize("name", sorted(BUILTIN_THEMES))
@pilot_test
async def test_every_screen_draws_in_every_theme_the_palette_offers(name):
    """Textual's own themes too: its ANSI ones name their colours as Textual alone reads them
    ("ansi_green"), and the map, the header and the views once handed them to Rich, which
    refused them and ended the app."""
    app = frozen_app(theme=name)
    async with app.run_test(size=(120, 36)) as pilot:
        await settled(pilot)
        for key in ("J", "question_mark", "R"):
            await pilot.press(key)
            await settled(pilot)
            await pilot.press("escape")
            await pilot.pause()
        app.open_job(1)
        await settled(pilot)
        assert type(app.screen).__name__ == "JobScreen"
        await pilot.press("escape")
        await settled(pilot)
        assert type(app.screen).__name__ == "FleetScreen"
