"""Key actions as data, in k9s's manner: each has an id (for ``[tui] keys``), its keys, what it
does, and whether it is dangerous. ``--readonly`` never binds a dangerous action, so it cannot be
pressed, and neither the header nor ``?`` lists it (both are built from the active bindings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Protocol, Sequence, cast

from rich.text import Text
from textual.actions import parse as parse_action
from textual.binding import Binding, BindingsMap
from textual.dom import DOMNode
from textual.keys import REPLACED_KEYS, key_to_character
from textual.screen import Screen
from textual.widgets import Static

from fractui.tui.parts import wrap_parts


@dataclass(frozen=True)
class Action:
    id: str
    keys: str
    action: str
    what: str
    tooltip: str = ""
    dangerous: bool = False
    """Changes what runs where (placement, stop, requeue, preempt): never bound --readonly."""
    show: bool = True
    """Listed in the header's key hints (``?`` lists every bound action)."""

    def binding(self) -> Binding:
        return Binding(self.keys, self.action, self.what, show=self.show, id=self.id,
                       tooltip=self.tooltip or self.what)


def bindings(actions: Iterable[Action], readonly: bool = False) -> list[Binding]:
    return [a.binding() for a in actions if not (readonly and a.dangerous)]


def bind(node: DOMNode, actions: Iterable[Action], readonly: bool) -> None:
    """Gives ``node`` its actions' bindings, without the dangerous ones when ``readonly``.
    Textual builds a node's bindings from its class; there is no public call to drop one, so
    the node's map is replaced here, before it is mounted (the keymap applies on top)."""
    node._bindings = BindingsMap(bindings(actions, readonly))


class Modal:
    """A node whose keys do different things in its modes (placement's ``enter`` places a
    pending job, moves a running one): it says what each does now, so the hints and ``?``
    never name what a key did in another mode."""

    def what_now(self, binding_id: str) -> Optional[str]:
        """What the key of ``binding_id`` does now; None: its binding's description."""
        return None


def shown_bindings(screen: Screen) -> list[tuple[tuple[str, ...], str, str, bool]]:
    """(keys as displayed, what, id, shown in hints) of every binding active on ``screen``
    now: what the header's hints and ``?`` list, so an unbound action is never offered."""
    found: dict[str, tuple[list[str], Binding, DOMNode]] = {}
    for key, active in screen.active_bindings.items():
        b = active.binding
        if not b.system and not typed_there(screen, key):
            found.setdefault(b.id or b.action, ([], b, active.node))[0].append(
                screen.app.get_key_display(b))
    return [(tuple(keys), _what(b, node), b.id or BUILT_IN, b.show)
            for keys, b, node in found.values()]


def refused_now(screen: Screen, key: str) -> Optional[tuple[str, tuple[object, ...]]]:
    """The action (name, parameters) of ``screen``'s own binding of ``key`` (as the keymap
    has it) that its ``check_action`` refuses now, where no other binding takes the key: a
    key listed a moment before (the job has just ended) that now does nothing, so the
    screen can say why. Textual has no public way to it: the chain is its own, and a Textual
    that no longer has it (only 8.2.8 is tried) says nothing here, as before, never fails."""
    if key in screen.active_bindings:
        return None
    for node, found in getattr(screen, "_binding_chain", ()):
        for binding in found.key_to_bindings.get(key, ()) if node is screen else ():
            _, name, parameters = parse_action(binding.action)
            if screen.check_action(name, parameters) is False:
                return name, parameters
    return None


def typed_there(screen: Screen, key: str) -> bool:
    """Whether the focused widget (a search's or a filter's box) types ``key``'s character,
    so its binding does nothing there. Textual drops such a binding itself, but finds no
    character for a key it names by another word than Unicode's (``slash``: SOLIDUS), and
    the box's keys listed ``/ search`` while ``/`` typed a slash into it."""
    focused = screen.focused
    return focused is not None and focused.check_consume_key(
        key, key_to_character(REPLACED_KEYS.get(key, key)))


class KeysNamed(Protocol):
    """The app, which knows every binding as shipped and as ``[tui] keys`` maps it."""

    def key_named(self, binding_id: str) -> str: ...


def key_named(node: DOMNode, binding_id: str) -> str:
    """The key of ``binding_id`` as a text that says what to press names it (a notice, a
    placeholder, a prompt): its first key as ``[tui] keys`` maps it, written as the key lines
    write it (``/``, ``esc``, ``^f``). A text naming the key as shipped sent an admin who had
    remapped it to a key that did nothing, or something else. An id no binding has raises
    ``KeyError`` (a typo in the code), never names a key that is no binding's."""
    return cast(KeysNamed, node.app).key_named(binding_id)


def _what(binding: Binding, node: DOMNode) -> str:
    now = node.what_now(binding.id) if isinstance(node, Modal) and binding.id else None
    return now or binding.description or binding.tooltip or binding.action


def listed(screen: Screen) -> list[tuple[str, str, str]]:
    """(key, what, id) of each binding listed in hints now: none while another screen (a
    confirmation, a picker, ``?``) covers ``screen``, since its keys do nothing under it."""
    if not screen.is_active:
        return []
    return [(keys[0], what, bid) for keys, what, bid, show in shown_bindings(screen) if show]


def hints(screen: Screen, prefixes: tuple[str, ...]) -> list[str]:
    """"key what" of each binding listed in hints now whose id starts with one of ``prefixes``:
    the screen's own keys, not the app's (quit, help, the palette)."""
    return ["%s %s" % (key, what) for key, what, bid in listed(screen)
            if bid.startswith(prefixes)]


def wrapped(keys: Sequence[str], width: int, sep: str = "  ") -> str:
    """Key hints two spaces apart (or ``sep``), on another line where the next would be cut:
    a narrow terminal shows every key, and never half of one."""
    return "\n".join(line.plain for line in wrap_parts([Text(k) for k in keys], width,
                                                        sep=sep))


APP_HINTS = ("app.help", "app.command", "fleet.jobs", "app.messages")
"""The app's keys every key line ends with, as the fleet header lists them: where every other
key is (``?``), the palette (``:``), the jobs view (``J``) and the recent notices (``e``), on
every screen where they are bound (``R``, the report, is in ``?``, as on the map)."""


class KeyLine(Static):
    """A screen's keys at its bottom (the job screen's, the GPU view's, the MIG profile
    picker's), wrapped to its width, then ``APP_HINTS``: what may be pressed there is seen,
    not only found in ``?``."""

    DEFAULT_CSS = """
    KeyLine { dock: bottom; height: auto; background: $panel; padding: 0 1;
              color: $text-muted; }
    """

    def __init__(self, prefixes: tuple[str, ...], id: Optional[str] = None) -> None:
        """``prefixes``: those of the ids of the screen's own bindings (``hints``)."""
        super().__init__(markup=False, id=id)
        self.prefixes = prefixes

    def on_mount(self) -> None:
        self.show()

    def on_resize(self) -> None:
        """Wrapped again to its width: a screen with a key line need not ask for it."""
        self.show()

    def show(self) -> None:
        """The keys bound now: as it is mounted and resized, and as its screen asks (another
        screen comes over it or goes, its bindings change)."""
        width = (self.screen.size.width or self.app.size.width) - 2  # (its padding)
        keys = hints(self.screen, self.prefixes) + hints(self.screen, APP_HINTS)
        self.display = bool(keys)  # (none while the screen is covered: no empty line)
        self.update(wrapped(keys, width))


class Keyed:
    """A screen that lists its keys (on a ``KeyLine``, the fleet's header): they are listed
    again as another screen comes over it and goes, so none shows under a confirmation, a
    picker or ``?`` (``listed``), where they do nothing."""

    def show_keys(self) -> None:
        """Lists the keys bound now; by default those of the screen's key lines."""
        for line in self.query(KeyLine):  # type: ignore[attr-defined]
            line.show()

    def on_screen_suspend(self) -> None:
        self.show_keys()

    def on_screen_resume(self) -> None:
        self.show_keys()


BUILT_IN = "(Textual's: fixed)"
"""The id ``?`` shows for a key of Textual's own (a scroll's): it has none to remap it by."""
