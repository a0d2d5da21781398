"""The host's programs the agent runs by name (rm, nvidia-smi, a container runtime's CLI) are
looked up on the agent's PATH alone, which is whatever the login, sudo's secure_path or a
service unit gave it. Where one is not found, what is said names that PATH, so that a PATH
which leaves out the program's directory is told apart from a host without the program. A
script that is there whose first line names an interpreter that is not fails its exec the
same way (ENOENT): that is said as what it is, naming the script and the interpreter."""

from __future__ import annotations

import os
import shutil
import stat
from typing import Optional

PATH_SHOWN = 200  # characters of the PATH said: a long one is cut


def not_found(program: str) -> str:
    """Words for ``program`` not found on the agent's PATH (exec's ENOENT)."""
    path = os.environ.get("PATH")
    missing = missing_interpreter(program, path)
    if missing:
        return "%s cannot run: %s" % (program, missing)
    shown = "unset, so %s" % os.defpath if path is None else path or "empty"
    return "%s is not installed, or not on the agent's PATH (%s)" % (program, _cut(shown))


def _cut(shown: str) -> str:
    """A PATH, or its directories, as said: cut past ``PATH_SHOWN`` characters."""
    return shown[:PATH_SHOWN] + "..." if len(shown) > PATH_SHOWN else shown


def unsearchable(program: str, path: str) -> Optional[str]:
    """Words for ``program``, named without a "/", found in no directory of ``path`` this
    process may search while some it may not search (exec's EACCES, which else reads as the
    program being there and not runnable: a typo's name did so), or None. Said alike whether
    the program is in those directories or not: the caller learns nothing of them."""
    if "/" in program:
        return None
    dirs = [d or "." for d in path.split(os.pathsep)]
    if any(_seen(os.path.join(d, program)) for d in dirs):
        return None  # one it may see is there: exec's own words say why it does not run
    shut = [d for d in dirs if _unsearchable(d)]
    if not shut:
        return None
    return "not found in a directory of its PATH it may search (it may not search %s)" % _cut(
        ", ".join(shut))


def _seen(path: str) -> bool:
    """Whether this process sees ``path`` there: a link into a directory it may not search
    is (its own directory lists it, wherever it leads: exec's EACCES is its), a link to
    nothing is not (exec passes it by, as a missing name)."""
    try:
        os.stat(path)
    except PermissionError:
        return os.path.lexists(path)
    except OSError:
        return False
    return True


def _unsearchable(folder: str) -> bool:
    """Whether ``folder`` is a directory this process may not search, or one in a directory
    it may not search (a missing one is neither: exec passes it by)."""
    try:
        mode = os.stat(folder).st_mode
    except PermissionError:
        return True
    except OSError:
        return False
    return stat.S_ISDIR(mode) and not os.access(folder, os.X_OK)


def missing_interpreter(program: str, path: Optional[str]) -> Optional[str]:
    """Words for ``program`` found (looked up on ``path`` as exec looks it up; os.defpath
    where None) whose first line ("#!") names an interpreter that is not there, or None:
    exec's ENOENT for a script that is there, which else reads as the script missing."""
    found = shutil.which(program, path=os.defpath if path is None else path)
    if found is None:
        return None
    try:
        with open(found, "rb") as script:
            first = script.readline(PATH_SHOWN)
    except OSError:
        return None
    interpreter = _interpreter(first)
    if not interpreter or os.path.exists(interpreter):
        return None
    name = interpreter.decode(errors="replace")
    if name.endswith("\r"):
        name = "%s\\r (it ends in a carriage return, as a line written on Windows does)" % (
            name[:-1])
    return "its first line names the interpreter %s, which is missing%s" % (
        name, "" if found == program else " (%s)" % found)


def _interpreter(first: bytes) -> Optional[bytes]:
    """The interpreter a script's first line names, as Linux reads it: after "#!" and any
    spaces or tabs, up to the next space, tab or the line's end; only those end it, so a
    line written on Windows names one ending in a carriage return (exec's ENOENT for a
    script that looks right)."""
    if not first.startswith(b"#!"):
        return None
    line = first[2:].split(b"\n", 1)[0].replace(b"\t", b" ").lstrip(b" ")
    return line.split(b" ", 1)[0] or None
