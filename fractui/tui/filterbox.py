"""The regex filter of the fleet map and of the jobs view: one box, opened by ``/`` on the
filter as it is, kept by ``enter`` and cleared by ``esc`` (``model.compile_filter`` reads it)."""

from __future__ import annotations

from textual.widgets import Input


class FilterBox(Input):
    DEFAULT_CSS = """
    FilterBox { dock: bottom; height: 3; display: none; }
    """

    def __init__(self, id: str, clears: str) -> None:
        """``clears``: the key that clears it, as ``[tui] keys`` maps it (``key_named``)."""
        super().__init__(placeholder="filter: regex, !regex for the rest; enter keeps, "
                         "%s clears" % clears, id=id)

    def open(self, text: str) -> None:
        """Shown, holding ``text`` (the filter now), with the focus."""
        self.display = True
        self.value = text
        self.focus()

    def close(self, clear: bool) -> None:
        """Hidden (``clear``: emptied too, as ``esc`` does); the screen gives the focus."""
        if clear:
            self.value = ""
        self.display = False
