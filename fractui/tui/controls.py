"""What the TUI writes to the admin's terminal: text, never a control sequence held in it.

Most of what the screens show is written by others: job names, argv and output by researchers,
errors by hosts and SSH servers. Rich and Textual pass an ESC in such text to the terminal as it
is (they drop only BEL, BS, VT, FF and CR), so a job named ``x\\x1b]52;c;…\\x1b\\\\`` set the admin's
clipboard each time it was drawn, and other sequences set the window title, move the cursor or
ask the terminal to answer into the keyboard's input. Every line on screen, whatever drew it
(Textual's widgets, Rich's tables, fractui's own line renderers), ends in ``Strip.render``: there
its text loses every C0 and C1 control, DEL and direction mark (fractui.terminal.CONTROLS),
zero cells wide to Rich and Textual, so the layout is as before; what was a sequence shows as
the text after the ESC.
"""

from __future__ import annotations

from typing import Any

from rich.segment import Segment
from textual.strip import Strip

from fractui.terminal import CONTROLS


def without_controls(strip: Strip) -> Strip:
    """``strip`` with no control character left in its text (itself where none is)."""
    if not CONTROLS.search("".join([s.text for s in strip])):  # (one search a line)
        return strip
    return Strip([s if s.control else Segment(CONTROLS.sub("", s.text), s.style)
                  for s in strip], strip.cell_length)


def install() -> None:
    """Make ``Strip.render`` (Textual's last step before the terminal) drop such controls;
    once per process, whatever number of apps."""
    render = Strip.render
    if getattr(render, "drops_controls", False):
        return

    def safe_render(self: Strip, console: Any) -> str:
        return render(without_controls(self), console)

    safe_render.drops_controls = True  # type: ignore[attr-defined]
    Strip.render = safe_render  # type: ignore[method-assign]
