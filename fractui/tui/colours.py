"""Colour arithmetic for themes: how far apart two colours look, how well text reads on a
background, and what a 256-colour terminal shows instead of a true colour. Pure functions on
``#rrggbb`` strings, so every theme, shipped or the admin's own, is held to the same rule.
"""

from __future__ import annotations

import re

from rich.color import Color, ColorSystem

HEX = re.compile(r"#[0-9a-fA-F]{6}")


def rgb(colour: str) -> tuple[int, int, int]:
    """``#rrggbb`` as three bytes."""
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def luminance(colour: str) -> float:
    """WCAG 2's relative luminance, 0 (black) to 1 (white)."""
    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c / 255) for c in rgb(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    """WCAG 2's contrast ratio, 1 (none) to 21 (black on white); body text wants 4.5."""
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def _lab(colour: str) -> tuple[float, float, float]:
    """CIE L*a*b* (D65) of an sRGB colour."""
    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c / 255) for c in rgb(colour))
    x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883

    def f(t: float) -> float:
        return t ** (1 / 3) if t > 216 / 24389 else (24389 / 27 * t + 16) / 116

    fx, fy, fz = f(x), f(y), f(z)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def distance(a: str, b: str) -> float:
    """How different two colours look: CIE76 delta E (about 2.3 is just noticeable; two
    colours meant to be told apart at a glance want tens)."""
    (l1, a1, b1), (l2, a2, b2) = _lab(a), _lab(b)
    return ((l1 - l2) ** 2 + (a1 - a2) ** 2 + (b1 - b2) ** 2) ** 0.5


def xterm256(colour: str) -> int:
    """The xterm-256 colour a 256-colour terminal shows for ``colour``: Rich's downgrade,
    which is what Textual writes there."""
    number = Color.parse(colour).downgrade(ColorSystem.EIGHT_BIT).number
    assert number is not None  # a downgrade to 8 bits always has a number
    return number
