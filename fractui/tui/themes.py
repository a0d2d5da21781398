"""Themes as data: each ``themes/*.toml`` becomes a Textual ``Theme`` plus the slice map's
palette, so a new theme is a file, not code.

A theme that is not ours (Textual's built-in ones, chosen from the palette) borrows the slice
palette of our dark or light theme, whichever matches it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from textual.theme import BUILTIN_THEMES, Theme

from fractui.config import tomllib

DEFAULT = "dark"
_COLOURS = ("primary", "secondary", "accent", "warning", "error", "success", "foreground",
            "background", "surface", "panel")
_SLICES = ("free", "idle", "other", "simulated", "placing", "stale")


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


def _load(text: str, source: str) -> FractuiTheme:
    doc = tomllib.loads(text)
    try:
        colours = {k: doc["colors"][k] for k in _COLOURS}
        slices = SlicePalette(owners=tuple(doc["slices"]["owners"]),
                              **{k: doc["slices"][k] for k in _SLICES})
        theme = Theme(name=doc["name"], dark=bool(doc["dark"]), **colours)
    except KeyError as err:
        raise ValueError("theme %s lacks %s" % (source, err)) from None
    return FractuiTheme(theme, slices)


@lru_cache(maxsize=1)
def builtin_themes() -> dict[str, FractuiTheme]:
    """The themes shipped in fractui/tui/themes/, by name."""
    found = {}
    for entry in sorted(resources.files("fractui.tui").joinpath("themes").iterdir(),
                        key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            loaded = _load(entry.read_text(encoding="utf-8"), entry.name)
            found[loaded.theme.name] = loaded
    return found


def theme_names() -> list[str]:
    """Every theme ``[tui] theme`` may name: ours and Textual's own."""
    return sorted(set(builtin_themes()) | set(BUILTIN_THEMES))


def palette_for(theme: Theme) -> SlicePalette:
    ours = builtin_themes()
    if theme.name in ours:
        return ours[theme.name].slices
    return ours[DEFAULT if theme.dark else "light"].slices


def label_colour(background: str) -> str:
    """Black or white, whichever contrasts more with ``background`` (#rrggbb): WCAG's relative
    luminance, so labels stay legible on every owner colour of every theme."""
    r, g, b = (int(background[i:i + 2], 16) / 255 for i in (1, 3, 5))

    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    lum = 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b)
    return "#000000" if (lum + 0.05) / 0.05 > 1.05 / (lum + 0.05) else "#ffffff"
