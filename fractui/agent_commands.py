"""``fractui agent-archive DIR``: the agent zipapp as a file, for an image that carries the agent
(deploy/kubernetes/Containerfile copies it to /opt/fractui/agent.pyz)."""

from __future__ import annotations

import argparse

from fractui.config import Config, shown_path
from fractui.fleet.zipapp import build_agent_archive, write_archive
from fractui.outcome import Failed, UsageError

IMAGE_NAME = "agent.pyz"  # the name in the image, whatever the content's hash


def agent_archive(config: Config, args: argparse.Namespace) -> int:
    if not args.dir:  # (a script's "$DIR" unset: the folder it names is no folder)
        raise UsageError("agent-archive DIR is an empty word: name the folder to write "
                         "%s in" % IMAGE_NAME)
    try:
        archive = build_agent_archive()
    except RuntimeError as err:  # pynvml cannot be vendored: the message says what to install
        raise Failed(str(err)) from err
    try:
        path = write_archive(archive, args.dir, IMAGE_NAME)
    except OSError as err:
        raise Failed("cannot write the agent archive into %s: %s" % (
            shown_path(args.dir), err.strerror or err)) from err
    print("%s  sha256 %s (%s)" % (shown_path(path), archive.sha256, archive.name))
    return 0
