"""The files fractui writes for itself on the admin's machine (its logs, in the state dir, and
the known_hosts ``fractui trust`` adds to): the admin's alone. Each is refused where another
local user could have put it there, or could replace it: the folders on its way are checked as
the config's are, and the file must be the admin's own regular file, never a link, made 0600,
one readable by others taken to 0600 (remote_agent.daemon.trust's rule) but known_hosts, which
keeps the read bits OpenSSH gives it."""

from __future__ import annotations

import os

from remote_agent.daemon.trust import check_tree, make_dirs, open_private


def open_append(path: str, what: str, flags: int = os.O_WRONLY, readable: bool = False) -> int:
    """A descriptor to append to the file at ``path`` (``what`` names it in a refusal; ``flags``
    O_RDWR to read it too), making it and its folder (0700) where missing; UnsafePath where
    another user could have made or could change it. Others may go on reading one they could
    with ``readable`` (else it is made 0600)."""
    folder = os.path.dirname(os.path.abspath(path))
    check_tree(folder, "folder of the " + what, runner="fractui")
    make_dirs(folder)
    check_tree(folder, "folder of the " + what, runner="fractui")  # as made, whoever made it
    return open_private(path, flags | os.O_CREAT | os.O_APPEND, what, runner="fractui",
                        readable=readable)
