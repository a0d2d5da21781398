"""``?``: every key of the screen it was opened from, with its binding id — the name to use in
the config's ``[tui] keys`` to remap it."""

from __future__ import annotations

from rich.cells import cell_len
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from fractui.tui.themes import RichVariables


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

    def __init__(self, keys: list[tuple[str, str, str]]) -> None:
        """``keys``: (key as displayed, what it does, binding id) of the screen below."""
        super().__init__()
        self.keys = keys

    def compose(self) -> ComposeResult:
        table = Table(box=None, padding=(0, 2, 0, 0), header_style="bold")
        # the keys and the ids whole at any width (one is pressed, the other written in the
        # config): where the screen is narrow, what each does takes more lines instead
        table.add_column("key", style="bold " + RichVariables(self.app)["secondary"],
                         no_wrap=True, min_width=max(cell_len(k) for k, _, _ in self.keys))
        table.add_column("what", min_width=12)
        table.add_column(Text("id, for [tui] keys"), style="dim", no_wrap=True,
                         min_width=max(cell_len(i) for _, _, i in self.keys))
        for key, what, binding_id in self.keys:
            table.add_row(key, what, binding_id)
        scroll = VerticalScroll(Static(table, expand=True))
        scroll.border_title = "keys"
        scroll.border_subtitle = "esc to close"
        yield scroll
