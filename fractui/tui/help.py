"""``?``: every key of the screen it was opened from, with its binding id — the name to use in
the config's ``[tui] keys`` to remap it; under them, what the screen's shortened words are."""

from __future__ import annotations

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.padding import Padding
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from fractui.tui.actions import key_named
from fractui.tui.themes import RichVariables


ID_HEAD = "id, for [tui] keys"
WHAT, GAP = 12, 2  # the least width of what a key does; the space after each column


class KeyTable:
    """The keys, what each does and its id, in three columns; where they do not fit (under
    about 50 columns) each key and its id on a line and what it does under them. The keys and
    the ids stay whole at any width: one is pressed, the other written in the config."""

    def __init__(self, keys: list[tuple[str, str, str]], colour: str) -> None:
        self.keys, self.key_style = keys, "bold " + colour

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        keys = max(cell_len(k) for k, _, _ in self.keys)
        ids = max([cell_len(ID_HEAD)] + [cell_len(i) for _, _, i in self.keys])
        if keys + WHAT + ids + 3 * GAP <= options.max_width:
            table = Table(box=None, padding=(0, GAP, 0, 0), header_style="bold")
            table.add_column("key", style=self.key_style, no_wrap=True, min_width=keys)
            table.add_column("what", min_width=WHAT)
            table.add_column(Text(ID_HEAD), style="dim", no_wrap=True, min_width=ids)
            for key, what, binding_id in self.keys:
                table.add_row(key, what, binding_id)
            yield table
            return
        yield Text("key".ljust(keys + GAP) + ID_HEAD, style="bold")
        for key, what, binding_id in self.keys:
            yield Text.assemble((key, self.key_style), " " * (keys + GAP - cell_len(key)),
                                (binding_id, "dim"))
            yield Padding(Text(what), (0, 0, 0, GAP))


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
    }
    HelpScreen > VerticalScroll {
        width: 78;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        background: $panel;
        border: round $accent;
        border-title-color: $accent;
        padding: 0 1;
    }
    """
    BINDINGS = [
        Binding("escape,question_mark,q", "dismiss", "close", id="help.close",
                tooltip="Close the help"),
        # a modal screen ends the chain of bindings before the app's: ctrl+c quits here too
        Binding("ctrl+c", "app.quit", "quit", id="help.quit", show=False),
    ]

    def __init__(self, keys: list[tuple[str, str, str]], words: str = "") -> None:
        """``keys``: (key as displayed, what it does, binding id) of the screen below;
        ``words``: what its columns' heads mean where a narrow terminal shortens them."""
        super().__init__()
        self.keys, self.words = keys, words

    def compose(self) -> ComposeResult:
        scroll = VerticalScroll(Static(KeyTable(self.keys, RichVariables(self.app)[
            "secondary"]), expand=True), *([Static("\n" + self.words, markup=False)]
                                            if self.words else []))
        scroll.border_title = "keys"
        scroll.border_subtitle = "%s to close" % key_named(self, "help.close")
        yield scroll
