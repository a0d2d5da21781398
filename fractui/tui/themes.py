"""Themes as data: each theme file becomes a Textual ``Theme`` plus the slice map's palette, so
a new theme is a file, not code. The shipped ones live in the top-level ``themes/`` folder (in
the package as ``fractui/themes``); the admin's own in ``$XDG_CONFIG_HOME/fractui/themes/``,
checked as the config is. A file that fails its check is left out and said, never fatal: the
TUI starts with the others, and ``fractui themes`` lists what loaded and what did not.

A theme that is not ours (Textual's built-in ones, chosen from the palette) borrows the slice
palette of our dark or light theme, whichever matches it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Iterator, Mapping, Optional, Sequence

from rich.color import Color as RichColor
from rich.color import ColorParseError
from textual.app import App
from textual.color import Color
from textual.theme import BUILTIN_THEMES, Theme

from fractui.config import ConfigError, default_config_path
from fractui.tui.colours import luminance
from fractui.tui.theme_file import ThemeData, read_theme

DEFAULT = "dark"


@dataclass(frozen=True)
class SlicePalette:
    """Colours of the slice map: ``owners`` for teams or queues in config order, the rest for
    what is not a job's."""

    owners: tuple[str, ...]
    free: str
    idle: str
    other: str
    simulated: str
    placing: str
    stale: str


@dataclass(frozen=True)
class FractuiTheme:
    theme: Theme
    slices: SlicePalette


@dataclass(frozen=True)
class ThemeFile:
    """What one theme file gave: its theme, or the error that kept it out."""

    path: str
    shipped: bool
    theme: Optional[FractuiTheme] = None
    error: Optional[ConfigError] = None

    @property
    def name(self) -> Optional[str]:
        return self.theme.theme.name if self.theme else None


def _made(data: ThemeData) -> FractuiTheme:
    return FractuiTheme(Theme(name=data.name, dark=data.dark, **data.colours),
                        SlicePalette(owners=data.owners, **data.states))


def shipped_dir() -> str:
    """The shipped themes: ``themes/`` of the source tree, ``fractui/themes`` once installed
    (the package holds a link to the folder; a wheel or sdist holds the files)."""
    return os.fspath(resources.files("fractui").joinpath("themes"))  # type: ignore[arg-type]


def user_dir() -> str:
    """``$XDG_CONFIG_HOME/fractui/themes``, beside the config file."""
    return os.path.join(os.path.dirname(default_config_path()), "themes")


def _files(folder: str, shipped: bool) -> list[ThemeFile | str]:
    """The paths of ``folder``'s theme files, or why one cannot be read: a folder that is not
    one, a FIFO or a device named ``*.toml`` (never opened: reading it could wait forever)."""
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".toml"))
    except FileNotFoundError:
        return []
    except OSError as err:
        return [ThemeFile(folder, shipped, error=ConfigError(
            folder, None, (err.strerror or str(err)).lower()))]
    paths = [os.path.join(folder, n) for n in names]
    return [p if os.path.isfile(p) else ThemeFile(p, shipped, error=ConfigError(
        p, None, "not a regular file")) for p in paths]


def theme_files() -> tuple[ThemeFile, ...]:
    """Every theme file, shipped first, then the admin's (user_dir()), each with its theme or
    its error."""
    return _theme_files(shipped_dir(), user_dir())


@lru_cache(maxsize=4)
def _theme_files(shipped: str, user: str) -> tuple[ThemeFile, ...]:
    """Read once per folder: a user's theme named as a shipped one replaces it; of two of the
    user's with one name, the second is refused."""
    found: list[ThemeFile] = []
    mine: dict[str, str] = {}  # name -> the user's file that defines it
    for entry, is_shipped in [(p, True) for p in _files(shipped, True)] + [
            (p, False) for p in _files(user, False)]:
        if isinstance(entry, ThemeFile):  # not readable: said as it is
            found.append(entry)
            continue
        path = entry
        try:
            data = read_theme(path)
        except ConfigError as err:
            found.append(ThemeFile(path, is_shipped, error=err))
            continue
        if not is_shipped:
            if data.name in mine:
                found.append(ThemeFile(path, False, error=ConfigError(
                    path, None, "theme '%s' is defined already, by %s" % (data.name,
                                                                        mine[data.name]))))
                continue
            mine[data.name] = path
        found.append(ThemeFile(path, is_shipped, _made(data)))
    return tuple(found)


def builtin_themes() -> dict[str, FractuiTheme]:
    """The shipped themes, by name."""
    return {f.theme.theme.name: f.theme for f in theme_files() if f.shipped and f.theme}


def loaded_themes() -> dict[str, FractuiTheme]:
    """Every theme that loaded, by name: shipped, then the admin's (which may replace one)."""
    return {f.theme.theme.name: f.theme for f in theme_files() if f.theme}


def broken_themes() -> list[ConfigError]:
    """Why each theme file that did not load was left out."""
    return [f.error for f in theme_files() if f.error]


def theme_names() -> list[str]:
    """Every theme ``[tui] theme`` may name: ours and Textual's own."""
    return sorted(set(loaded_themes()) | set(BUILTIN_THEMES))


def palette_for(theme: Theme) -> SlicePalette:
    ours = loaded_themes()
    if theme.name in ours:
        return ours[theme.name].slices
    return ours[DEFAULT if theme.dark else "light"].slices


def owner_colour(slices: SlicePalette, owners: Sequence[str], name: str) -> str:
    """A team's (or queue's) colour: its place in the config's ``owners``, else a hash of its
    name — the same on the slice map, its legend and the report's plots."""
    place = owners.index(name) if name in owners else sum(map(ord, name))
    return slices.owners[place % len(slices.owners)]


def owners_marked(slices: SlicePalette, owners: Sequence[str], no_color: bool) -> bool:
    """Whether owners are told apart by their marks (bars.owner_marks) as well as by colour:
    under NO_COLOR (every colour a grey), and where there are more of them than the theme has
    colours (the ninth team of eight colours took the first's) — on the map and the report's
    plots alike."""
    return no_color or len(owners) > len(slices.owners)


def label_colour(background: str) -> str:
    """Black or white, whichever contrasts more with ``background`` (#rrggbb): WCAG's relative
    luminance, so labels stay legible on every owner colour of every theme."""
    lum = luminance(background)
    return "#000000" if (lum + 0.05) / 0.05 > 1.05 / (lum + 0.05) else "#ffffff"


@lru_cache(maxsize=256)
def rich_colour(value: str) -> str:
    """A Textual theme variable's colour as Rich reads it: Textual's ANSI themes name theirs as
    Textual alone reads them ("ansi_green", "ansi_default", "transparent"), which Rich refuses;
    those become Rich's ("color(2)", "default"). A colour Rich reads is kept as it is."""
    try:
        RichColor.parse(value)
        return value
    except ColorParseError:
        colour = Color.parse(value)
        return "default" if colour.a == 0 else colour.rich_color.name


def muted_colour(variables: Mapping[str, str]) -> str:
    """Text that says less (a greyed host, an idle slice's figures): the foreground blended
    towards the surface; on an ANSI theme, whose colours are the terminal's own and cannot be
    blended, its bright black."""
    foreground, surface = Color.parse(variables["foreground"]), Color.parse(variables["surface"])
    if foreground.ansi is not None or surface.ansi is not None or surface.a == 0:
        return "bright_black"
    return foreground.blend(surface, 0.45).hex


class RichVariables(Mapping[str, str]):
    """An app's theme variables, each read as Rich reads colours (``rich_colour``): what the
    screens pass to Rich styles, so that every theme the palette offers draws."""

    def __init__(self, app: App) -> None:
        self._variables = app.theme_variables

    def __getitem__(self, name: str) -> str:
        return rich_colour(self._variables[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._variables)

    def __len__(self) -> int:
        return len(self._variables)
