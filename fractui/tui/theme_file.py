"""One theme file, read and checked as the config is: every mistake is a ``ConfigError`` at
``file:line``, and a theme that would not read well (text too faint, two owners alike, an owner
alike what is not a job's, colours that merge in a 256-colour terminal) is refused the same
way, so the admin's own themes are held to the rule the shipped ones pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from fractui.config import TomlChecker, name_problem, read_toml
from fractui.tui.colours import HEX, contrast, distance, xterm256

_COLOURS = ("primary", "secondary", "accent", "warning", "error", "success", "foreground",
           "background", "surface", "panel")
_STATES = ("free", "idle", "other", "simulated", "placing", "stale")
_TOP = {"name": "string", "dark": "boolean", "colors": "table", "slices": "table"}
_SLICE_KEYS = {"owners": "strings", **{k: "string" for k in _STATES}}
MAX_OWNERS = 64
MAX_MIB = 1

# The rule every theme passes (docs/decisions.md says why these numbers).
MIN_TEXT_CONTRAST = 4.5
"""WCAG AA for body text: the foreground on the background, surface and panel."""
MIN_OWNER_DISTANCE = 15.0
"""Delta E between any two owner colours: teams told apart at a glance."""
MIN_STATE_DISTANCE = 20.0
"""Delta E between an owner and a colour that is not a job's (free, idle, being made...)."""
MIN_GROUND_DISTANCE = 8.0
"""Delta E between the background and each slice colour: a free slice still shows."""
_BACKGROUNDS = ("background", "surface", "panel")


@dataclass(frozen=True)
class ThemeData:
    """A theme file's content, checked: Textual's colours and the slice map's."""

    name: str
    dark: bool
    colours: dict[str, str]
    owners: tuple[str, ...]
    states: dict[str, str]


def read_theme(path: str) -> ThemeData:
    """The theme in the file at ``path``; ConfigError, at the line at fault, if it is not one."""
    text, doc = read_toml(path, MAX_MIB, "theme file")
    check = TomlChecker(path, text)
    top = check.values(doc, _TOP, "a theme file", "", None, "")
    _present(check, top, tuple(_TOP), "", "a theme file")
    problem = name_problem(top["name"])
    if problem:
        raise check.fail("name " + problem, key="name")
    colours = check.values(top["colors"], {k: "string" for k in _COLOURS}, "[colors]",
                           "colors", None, "colors.")
    _present(check, colours, _COLOURS, "colors", "[colors]")
    slices = check.values(top["slices"], _SLICE_KEYS, "[slices]", "slices", None, "slices.")
    _present(check, slices, tuple(_SLICE_KEYS), "slices", "[slices]")
    owners = tuple(slices.pop("owners"))
    if not 1 <= len(owners) <= MAX_OWNERS:
        raise check.fail("slices.owners must have 1 to %d colours, got %d" % (
            MAX_OWNERS, len(owners)), "slices", None, "owners")
    for table, key, value in ([("colors", k, v) for k, v in colours.items()] +
                              [("slices", k, v) for k, v in slices.items()] +
                              [("slices", "owners", v) for v in owners]):
        if not HEX.fullmatch(value):
            raise check.fail("%s.%s must be a colour as #rrggbb, got %r" % (table, key, value),
                             table, None, key)
    data = ThemeData(top["name"], top["dark"], colours, owners, slices)
    first = next(unreadable(data), None)
    if first:
        table, key, message = first
        raise check.fail(message, table, None, key)
    return data


def _present(check: TomlChecker, raw: dict[str, Any], keys: tuple[str, ...], table: str,
             label: str) -> None:
    missing = [k for k in keys if k not in raw]
    if missing:
        raise check.fail("%s lacks %s (it needs: %s)" % (label, ", ".join(missing),
                                                         ", ".join(keys)), key=table or None)


def unreadable(theme: ThemeData) -> Iterator[tuple[str, str, str]]:
    """(table, key, why) for each way ``theme`` would not read well; none for a good one."""
    fg = theme.colours["foreground"]
    for key in _BACKGROUNDS:
        ratio = contrast(fg, theme.colours[key])
        if ratio < MIN_TEXT_CONTRAST:
            yield ("colors", "foreground", "colors.foreground %s on colors.%s %s reads at "
                   "%.1f:1; at least %.1f:1" % (fg, key, theme.colours[key], ratio,
                                                MIN_TEXT_CONTRAST))
    owners = theme.owners
    for i, a in enumerate(owners):
        for j in range(i + 1, len(owners)):
            if distance(a, owners[j]) < MIN_OWNER_DISTANCE:
                yield ("slices", "owners", "slices.owners[%d] %s and [%d] %s look alike "
                       "(delta E %.0f; at least %.0f)" % (i, a, j, owners[j],
                                                          distance(a, owners[j]),
                                                          MIN_OWNER_DISTANCE))
        for state, colour in theme.states.items():
            if distance(a, colour) < MIN_STATE_DISTANCE:
                yield ("slices", "owners", "slices.owners[%d] %s looks like slices.%s %s "
                       "(delta E %.0f; at least %.0f)" % (i, a, state, colour,
                                                          distance(a, colour),
                                                          MIN_STATE_DISTANCE))
    ground = theme.colours["background"]
    for state, colour in theme.states.items():
        if distance(colour, ground) < MIN_GROUND_DISTANCE:
            yield ("slices", state, "slices.%s %s hardly shows on colors.background %s "
                   "(delta E %.0f; at least %.0f)" % (state, colour, ground,
                                                      distance(colour, ground),
                                                      MIN_GROUND_DISTANCE))
    placing = theme.states["placing"]
    for state, colour in theme.states.items():
        if state != "placing" and distance(placing, colour) < MIN_STATE_DISTANCE:
            yield ("slices", "placing", "slices.placing %s looks like slices.%s %s (delta E "
                   "%.0f; at least %.0f)" % (placing, state, colour, distance(placing, colour),
                                             MIN_STATE_DISTANCE))
    seen: dict[int, tuple[str, str]] = {}
    for name, colour in [("owners[%d]" % i, c) for i, c in enumerate(owners)] + [
            ("placing", placing)]:
        number = xterm256(colour)
        if number in seen:
            yield ("slices", name.split("[")[0], "slices.%s %s and slices.%s %s are the same "
                   "colour (%d) in a 256-colour terminal" % (*seen[number], name, colour,
                                                             number))
        seen.setdefault(number, (name, colour))
