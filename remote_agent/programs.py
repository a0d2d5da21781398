"""The host's programs the agent runs by name (rm, nvidia-smi, a container runtime's CLI) are
looked up on the agent's PATH alone, which is whatever the login, sudo's secure_path or a
service unit gave it. Where one is not found, what is said names that PATH, so that a PATH
which leaves out the program's directory is told apart from a host without the program."""

from __future__ import annotations

import os

PATH_SHOWN = 200  # characters of the PATH said: a long one is cut


def not_found(program: str) -> str:
    """Words for ``program`` not found on the agent's PATH."""
    path = os.environ.get("PATH")
    shown = "unset, so %s" % os.defpath if path is None else path or "empty"
    if len(shown) > PATH_SHOWN:
        shown = shown[:PATH_SHOWN] + "..."
    return "%s is not installed, or not on the agent's PATH (%s)" % (program, shown)
