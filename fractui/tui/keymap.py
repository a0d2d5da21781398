"""The config's ``[tui] keys`` checked as keys: each one a name Textual gives a key press, and
none that does two things where its binding is active. Textual takes any string as a key and
any clash quietly (a remapped key it never sends is never pressed; of two bindings of one key,
one is never reached), so an admin's typo would only show as a key that does nothing."""

from __future__ import annotations

import functools
import sys
import unicodedata
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from textual._keyboard_protocol import FUNCTIONAL_KEYS
from textual.binding import Binding
from textual.dom import DOMNode
from textual.keys import (KEY_ALIASES, REPLACED_KEYS, Keys, _character_to_key,
                         _normalize_key_list, format_key, key_to_character)

MODIFIERS = ("alt", "ctrl", "hyper", "meta", "shift", "super")
"""In the order Textual names them in a key (it sorts them): ``ctrl+shift+up``."""
NAMED = {k.value for k in Keys if not k.value.startswith("<")} | set(FUNCTIONAL_KEYS.values())
"""Keys Textual names as a whole (``ctrl+@``, ``f1``, ``escape``, ``shift+tab``), and those
only kitty's keyboard protocol reports, which Textual asks for (``pause``, ``f25``)."""
SAME_KEY = {alias: key for key, aliases in KEY_ALIASES.items() for alias in aliases}
"""Another name of one press (``ctrl+i`` is ``tab``): bound, it is that key's binding too."""


@dataclass(frozen=True)
class Scope:
    """Nodes whose bindings are active at once: a screen, its focused widget, and the app's
    where the screen is not modal (a modal one ends the chain of bindings before them)."""

    name: str
    nodes: tuple[type[DOMNode], ...]
    unbound: tuple[str, ...] = ()
    """Ids of the nodes' bindings not active here (the app's key of a view, on that view)."""


@dataclass(frozen=True)
class Clash:
    """Two bindings of one key in one scope, at least one of them remapped."""

    binding_id: str
    """The remapped one the message is about."""
    key: str
    others: tuple[str, ...]
    """The other bindings' ids, or Textual's own action where it has none."""
    scope: str


def key_problem(key: str) -> Optional[str]:
    """What is wrong with one key as ``[tui] keys`` gives it (after Textual's own rewriting of
    a lone character: ``?`` is ``question_mark``), or None where Textual can send it."""
    if not key:
        return "an empty key (a comma at an end, or two together: the comma key is named comma)"
    if key in NAMED:
        return None
    *modifiers, name = key.split("+")
    if not name:  # (ctrl++, and ctrl+, split at its comma)
        return "it ends in '+' (the plus key is named plus, the comma key comma)"
    unknown = [m for m in modifiers if m not in MODIFIERS]
    if unknown:
        return "%r is no modifier (they are %s)" % (unknown[0], ", ".join(MODIFIERS))
    if modifiers != sorted(set(modifiers)):
        return "Textual names it %r" % "+".join(sorted(set(modifiers)) + [name])
    if len(name) == 1 and _character_to_key(name) != name:
        return "Textual names it %r" % "+".join(modifiers + [_character_to_key(name)])
    if len(name) == 1 and modifiers == ["shift"] and name.isalpha():
        if len(name.upper()) > 1:  # (ß is SS in capitals: no key)
            return "a terminal sends the character shift and %s make, never %s" % (name, key)
        return "Textual names it %r (a capital)" % name.upper()  # (a terminal sends "A")
    if len(name) == 1 and modifiers and name.isupper():
        return "Textual names it %r" % "+".join(sorted({"shift", *modifiers}) + [name.lower()])
    if len(name) == 1 or name in NAMED or name in character_names():
        return None
    character = key_to_character(REPLACED_KEYS.get(name, name)) if name.islower() else None
    if character is not None:  # (a Unicode name Textual gives its character by another)
        return "Textual names it %r" % "+".join(modifiers + [_character_to_key(character)])
    if name != name.lower() and key_problem("+".join(modifiers + [name.lower()])) is None:
        # (F1, PageDown, Escape: Textual's names are in lower case)
        return "Textual names it %r" % "+".join(modifiers + [name.lower()])
    return ("%r is no key's name (a character, or a name such as escape, enter, tab, space, "
            "up, pagedown, f1, slash, question_mark)" % name)


@functools.lru_cache(maxsize=None)
def character_names() -> frozenset[str]:
    """The names Textual gives the characters it sends by a name (``_character_to_key``:
    ``slash``, ``question_mark``, ``plus_minus_sign`` for ``±``, whose Unicode name's hyphen
    no lookup of the name undoes): every named character's, once (a tenth of a second; one
    with no name is sent as itself)."""
    return frozenset(_character_to_key(c) for c in map(chr, range(sys.maxunicode + 1))
                     if not c.isalnum() and unicodedata.name(c, ""))


def keys_problem(value: str) -> Optional[str]:
    """What is wrong with one ``[tui] keys`` value (``"x,ctrl+q"``), or None."""
    keys = keys_of(value)
    for n, key in enumerate(keys):
        if key in keys[:n]:
            return "it names %s twice" % key
        problem = key_problem(key)
        if problem is not None:
            return problem if len(keys) == 1 or not key else "in %s, %s" % (key, problem)
    return None


def keys_of(value: str) -> list[str]:
    """The keys of one ``[tui] keys`` value, as Textual reads them (``set_keymap``: a lone
    character by its name, ``?`` as ``question_mark``)."""
    return _normalize_key_list(value).split(",")


def shown_key(key: str) -> str:
    """A key as a message names it: as Textual shows it, and by its name where that is
    another word (``? (question_mark)``, the name to write)."""
    shown = format_key(key)
    return key if shown == key else "%s (%s)" % (shown, key)


def clashes(scopes: Sequence[Scope], keymap: Mapping[str, str]) -> list[Clash]:
    """Each key bound twice in a scope once ``keymap`` (binding id -> keys) is applied, that
    was not bound so by the bindings as written (``q`` goes back from the report before it
    quits: that is by design, not the config's)."""
    found = []
    for scope in scopes:
        mine, theirs = _bound(scope, keymap), _bound(scope, {})
        for key, who in mine.items():
            if len(who) < 2 or who <= theirs.get(key, set()):
                continue
            remapped = sorted(b for b in who if b in keymap)
            found += [Clash(b, key, tuple(sorted(who - {b})), scope.name) for b in remapped[:1]]
    return found


def _bound(scope: Scope, keymap: Mapping[str, str]) -> dict[str, set[str]]:
    """key -> who binds it in ``scope``: binding ids, and Textual's own actions (no id)."""
    bound: dict[str, set[str]] = {}
    for node in scope.nodes:
        # (DOMNode's own merge of a class's bindings, its bases' as Textual inherits them)
        for key, bindings in node._merge_bindings().key_to_bindings.items():
            for binding in bindings:
                if binding.id in scope.unbound:
                    continue
                for each in _keys(binding, keymap):
                    bound.setdefault(SAME_KEY.get(each, each), set()).add(
                        binding.id or "Textual's own %s" % binding.action)
    return bound


def _keys(binding: Binding, keymap: Mapping[str, str]) -> list[str]:
    if binding.id in keymap:
        return keys_of(keymap[binding.id])
    return [binding.key]
