"""The config's ``[tui] keys`` checked as keys before the TUI starts: a key Textual never sends
(a modifier misspelt or out of its order, a name it has not), one written twice, or one that
another binding has where it is active (the app's q, ?, ctrl+p, a screen's tab or escape, a
key of Textual's own) is the config's ``file:line`` error, exit 2, and no traceback."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest
from textual._keyboard_protocol import FUNCTIONAL_KEYS
from textual.dom import DOMNode
from textual.keys import _character_to_key

import fractui.tui
from fractui.config import load_config
from fractui.tui.app import binding_ids, check_tui_settings, scopes
from fractui.tui.fleet_screen import FleetScreen
from fractui.tui.jobs_view import JobsScreen
from fractui.tui.keymap import key_problem
from fractui.tui.messages import MessagesScreen
from fractui.tui.report_view import ReportScreen
from fractui.tui.themes import theme_names
from tests.conftest import REPO
from tests.tui_frozen import pilot_test, settled, settled_app

MODIFIERS = "alt, ctrl, hyper, meta, shift, super"
CLASH = ", so one of them could never be pressed there (give one of them another key; ? there " \
        "lists each key and its id)"


def fractui_tui(tmp_path, keys: str) -> subprocess.CompletedProcess:
    """``fractui --config FILE`` (the TUI on the fleet) with ``keys`` as its ``[tui.keys]``
    table, on line 2 on: it ends before any terminal is needed where the keys are wrong."""
    config = tmp_path / "config.toml"
    config.write_text("[tui.keys]\n" + keys + "\n")
    return subprocess.run([sys.executable, "-m", "fractui", "--config", str(config)],
                          capture_output=True, text=True, cwd=REPO, timeout=120,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("keys, said", [
    ('"fleet.filter" = "Ctrl+f"',
     "2: tui.keys.'fleet.filter' = 'Ctrl+f': 'Ctrl' is no modifier (they are %s)" % MODIFIERS),
    ('"fleet.filter" = "shift+ctrl+f"',
     "2: tui.keys.'fleet.filter' = 'shift+ctrl+f': Textual names it 'ctrl+shift+f'"),
    ('"fleet.filter" = "ctrl+?"',
     "2: tui.keys.'fleet.filter' = 'ctrl+?': Textual names it 'ctrl+question_mark'"),
    ('"fleet.filter" = "ctrl+F"',
     "2: tui.keys.'fleet.filter' = 'ctrl+F': Textual names it 'ctrl+shift+f'"),
    ('"fleet.filter" = "ctrl+shift+F"',
     "2: tui.keys.'fleet.filter' = 'ctrl+shift+F': Textual names it 'ctrl+shift+f'"),
    ('"fleet.filter" = "shift+f"',
     "2: tui.keys.'fleet.filter' = 'shift+f': Textual names it 'F' (a capital)"),
    ('"fleet.filter" = "shift+ß"', "2: tui.keys.'fleet.filter' = 'shift+ß': a terminal sends "
     "the character shift and ß make, never shift+ß"),
    ('"fleet.filter" = "f,pgdn"',
     "2: tui.keys.'fleet.filter' = 'f,pgdn': in pgdn, 'pgdn' is no key's name (a character, "
     "or a name such as escape, enter, tab, space, up, pagedown, f1, slash, question_mark)"),
    ('"fleet.filter" = "F1"', "2: tui.keys.'fleet.filter' = 'F1': Textual names it 'f1'"),
    ('"fleet.filter" = "ctrl+PageDown"',
     "2: tui.keys.'fleet.filter' = 'ctrl+PageDown': Textual names it 'ctrl+pagedown'"),
    ('"fleet.filter" = "ctrl+hyphen_minus"',
     "2: tui.keys.'fleet.filter' = 'ctrl+hyphen_minus': Textual names it 'ctrl+minus'"),
    ('"fleet.filter" = "latin_small_letter_e_with_acute"', "2: tui.keys.'fleet.filter' = "
     "'latin_small_letter_e_with_acute': Textual names it 'é'"),
    ('"fleet.filter" = "Fn"',
     "2: tui.keys.'fleet.filter' = 'Fn': 'Fn' is no key's name (a character, or a name such "
     "as escape, enter, tab, space, up, pagedown, f1, slash, question_mark)"),
    ('"fleet.filter" = "ctrl+"',
     "2: tui.keys.'fleet.filter' = 'ctrl+': it ends in '+' (the plus key is named plus, the "
     "comma key comma)"),
    ('"fleet.filter" = "ctrl++"', "2: tui.keys.'fleet.filter' = 'ctrl++': it ends in '+' (the "
     "plus key is named plus, the comma key comma)"),
    ('"fleet.filter" = "f,ctrl+,"', "2: tui.keys.'fleet.filter' = 'f,ctrl+,': in ctrl+, it ends "
     "in '+' (the plus key is named plus, the comma key comma)"),
    ('"fleet.filter" = "f,"',
     "2: tui.keys.'fleet.filter' = 'f,': an empty key (a comma at an end, or two together: "
     "the comma key is named comma)"),
    ('"fleet.filter" = "f, f"', "2: tui.keys.'fleet.filter' = 'f, f': it names f twice"),
    ('"fleet.filter" = "q"',
     "2: tui.keys.'fleet.filter' = 'q': q is also the key of app.quit on the map" + CLASH),
    ('"fleet.compact" = "?"', "2: tui.keys.'fleet.compact' = '?': ? (question_mark) is also "
     "the key of app.help on the map" + CLASH),
    ('"map.gpu" = "ctrl+p"', "2: tui.keys.'map.gpu' = 'ctrl+p': ctrl+p is also the key of "
     "app.command on the map" + CLASH),
    ('"queue.place" = "tab"', "2: tui.keys.'queue.place' = 'tab': tab is also the key of "
     "fleet.panel on the queue panel" + CLASH),
    ('"queue.place" = "ctrl+i"', "2: tui.keys.'queue.place' = 'ctrl+i': tab is also the key "
     "of fleet.panel on the queue panel" + CLASH),  # (the same press: Textual's alias)
    ('"log.follow" = "escape"', "2: tui.keys.'log.follow' = 'escape': esc (escape) is also the "
     "key of job.back on the job screen" + CLASH),
    ('"confirm.yes" = "tab"', "2: tui.keys.'confirm.yes' = 'tab': tab is also the key of "
     "Textual's own app.focus_next on a confirmation" + CLASH),
    ('"help.close" = "up"', "2: tui.keys.'help.close' = 'up': ↑ (up) is also the key of "
     "Textual's own scroll_up on the help" + CLASH),
    ('"app.theme" = "T"\n"fleet.compact" = "T"', "2: tui.keys.'app.theme' = 'T': T is also "
     "the key of fleet.compact on the map" + CLASH),  # (both remapped: the first id said)
])
def test_a_wrong_tui_key_exits_2_naming_the_file_its_line_and_the_key(tmp_path, keys, said):
    done = fractui_tui(tmp_path, keys)
    assert (done.returncode, done.stderr) == (2, "fractui: %s:%s\n" % (tmp_path / "config.toml", said))


def test_keys_written_inline_are_said_at_the_keys_line(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[tui]\ntheme = "dark"\nkeys = { "app.quit" = "x", "fleet.order" = "x" }\n')
    done = subprocess.run([sys.executable, "-m", "fractui", "--config", str(config)],
                          capture_output=True, text=True, cwd=REPO, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("fractui: %s:3: tui.keys.'app.quit' = 'x': x is also the key of "
                                  "fleet.order on the map" % config), done.stderr


def test_keys_that_clash_only_as_written_and_remaps_that_free_a_key_are_fine(tmp_path):
    """``q`` goes back from the report before it quits: by design, not the config's, so
    quitting on ``x,q`` is no clash; nor is ``o`` for the GPU view once the order has ``O``."""
    for keys in ('"app.quit" = "x,q"', '"map.gpu" = "o"\n"fleet.order" = "O"',
                 '"fleet.filter" = "f"\n"app.quit" = "x,ctrl+q"',  # (the docs' example)
                 '"fleet.compact" = "shift+ctrl+f"'.replace("shift+ctrl", "ctrl+shift"),
                 '"messages.back" = "escape,q,e"\n"jobs.back" = "escape,q,J"'):
        path = tmp_path / "config.toml"
        path.write_text("[tui.keys]\n" + keys + "\n")
        check_tui_settings(load_config(str(path)), theme_names())


def test_keys_textual_names_in_the_kitty_keyboard_protocol_are_fine(tmp_path):
    """Textual asks the terminal for kitty's keyboard protocol, and names the keys it reports
    that no other way of sending keys has (``pause``, ``menu``, ``f25``, ``media_play_pause``,
    a keypad's ``add``): a key a terminal sends, bound by an admin, is no wrong key."""
    path = tmp_path / "config.toml"
    path.write_text('[tui.keys]\n"fleet.filter" = "pause,menu,ctrl+print_screen,f25,'
                    'media_play_pause,scroll_lock,add"\n')
    check_tui_settings(load_config(str(path)), theme_names())
    assert [key for key in FUNCTIONAL_KEYS.values() if key_problem(key) or
            key_problem("ctrl+" + key)] == []


def test_keys_of_characters_textual_names_by_a_hyphened_unicode_name_are_fine(tmp_path):
    """Textual names a character by its Unicode name, a hyphen as ``_`` (``±``, PLUS-MINUS
    SIGN, is ``plus_minus_sign``), which no lookup of the name with spaces finds: ``±`` and
    ``«`` written as they are, or by those names, were refused as no key's name. Every
    character's name Textual gives is a key."""
    path = tmp_path / "config.toml"
    path.write_text('[tui.keys]\n"fleet.filter" = "±,«,ctrl+plus_minus_sign,no_break_space"\n')
    check_tui_settings(load_config(str(path)), theme_names())
    assert [c for c in map(chr, range(0x21, 0x3000)) if key_problem(_character_to_key(c))] == []


def test_every_binding_remapped_to_its_own_keys_is_fine(tmp_path):
    """The keys as written pass the check: each is one Textual sends, and no clash is new."""
    written: dict[str, list[str]] = {}
    for scope in scopes():
        for cls in scope.nodes:
            for key, bindings in cls._merge_bindings().key_to_bindings.items():
                for b in bindings:
                    if b.id and key not in written.setdefault(b.id, []):
                        written[b.id].append(key)
    assert sorted(written) == sorted(binding_ids())
    path = tmp_path / "config.toml"
    path.write_text("[tui.keys]\n" + "".join('"%s" = "%s"\n' % (i, ",".join(k))
                                            for i, k in written.items()))
    check_tui_settings(load_config(str(path)), theme_names())


@pilot_test
async def test_a_views_own_key_may_close_it_as_the_app_binds_that_key_nowhere_on_it():
    """The app's ``e``, ``J`` and ``R`` open a view and are unbound on that view itself
    (``check_action``): a view's way back on its own key (``e`` opens the messages and
    closes them) clashes with nothing there, and works."""
    keys = (("messages.back", "escape,q,e"), ("jobs.back", "escape,q,J"),
            ("report.back", "escape,q,R"))
    async with settled_app((160, 48), keys=keys) as (app, pilot):
        for key, view in (("e", MessagesScreen), ("J", JobsScreen), ("R", ReportScreen)):
            await pilot.press(key)
            await settled(pilot)
            assert isinstance(app.screen, view)
            await pilot.press(key)
            await settled(pilot)
            assert isinstance(app.screen, FleetScreen), (key, app.screen)


@pilot_test
async def test_the_scopes_are_the_screens_chains_of_bindings():
    """What the check takes to be active at once is what Textual asks on each screen, its
    focused widget's first (the app's after, but not over a modal screen)."""
    async with settled_app((160, 48)) as (app, pilot):
        seen: dict[str, set[str]] = {}

        async def at(name: str, *keys: str) -> None:
            await settled(pilot)
            for key in keys:
                await pilot.press(key)
                await settled(pilot)
            seen[name] = {type(node).__name__ for node, bound in
                          app.screen._modal_binding_chain if bound.key_to_bindings}

        await at("the map")
        await at("the queue panel", "tab")
        await pilot.press("tab")
        app.move_job(2)
        await at("a placement's preview")
        await at("the jobs view", "escape", "J")
        await pilot.press("escape")
        app.open_job(1)
        await at("the job screen")
        await at("a confirmation", "s")
        await pilot.press("n", "escape")
        app.open_gpu("h100-1", 0)
        await at("the GPU view")
        await at("the MIG profile picker", "N")
        await at("the report", "escape", "escape", "R")
        await at("the messages", "escape", "e")
        await at("the help", "escape", "question_mark")
    assert seen == {s.name: {cls.__name__ for cls in s.nodes} for s in scopes()}


def test_every_screen_and_widget_with_a_binding_the_config_may_remap_is_in_a_scope():
    """The scopes are written out: a screen or widget added with bindings of its own and left
    out of them would have its ids refused as unknown and its clashes never looked for, and
    the walk above would not notice it. Every class of fractui.tui with a binding id is in one."""
    for module in pkgutil.iter_modules(fractui.tui.__path__):
        importlib.import_module("fractui.tui." + module.name)
    classes, todo = set(), [DOMNode]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.__module__.startswith("fractui.") and any(
                b.id for bindings in cls._merge_bindings().key_to_bindings.values()
                for b in bindings):
            classes.add(cls.__qualname__)
    assert len(classes) > 10
    assert classes <= {cls.__qualname__ for scope in scopes() for cls in scope.nodes}, sorted(
        classes - {cls.__qualname__ for scope in scopes() for cls in scope.nodes})
