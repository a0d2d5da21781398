"""The environment a job starts from: declared here, documented in docs/protocol.md.

A job inherits nothing else from the daemon, whose own environment is whatever the first bridge's
SSH session or sudo gave it (an SSH agent socket, PYTHONPATH, the admin's variables): a job must
start the same whichever admin's connection happened to start the daemon.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from typing import Dict, Mapping, Optional

from remote_agent.jobs.caps import MPS_DIRS, NO_MPS_PIPES, mps_dir_refusal

# Taken from the daemon's environment when set there: the host's locale and time zone, where
# programs are, and how to reach the host's MPS daemon (its directories only where no other user
# could stand in for it: caps.mps_dir_refusal; a refused pipe directory, named or the default,
# is replaced by caps.NO_MPS_PIPES, as CUDA would go to the default without one).
INHERITED = ("PATH", "LANG", "LANGUAGE", "TZ", "CUDA_MPS_PIPE_DIRECTORY",
             "CUDA_MPS_LOG_DIRECTORY")
INHERITED_PREFIXES = ("LC_",)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
JOB_UMASK = 0o022


@dataclass(frozen=True)
class JobUser:
    """Who a job runs as: its uid, gid, name, home and shell."""

    uid: int
    gid: int
    name: str
    home: str
    shell: str

    @classmethod
    def named(cls, name: Optional[str]) -> "JobUser":
        """``name``'s account, or the agent's own user when None; KeyError if there is none."""
        if name is not None:
            return cls._of(pwd.getpwnam(name))
        uid = os.geteuid()
        try:
            return cls._of(pwd.getpwuid(uid))
        except KeyError:  # a uid without an account (some containers): no home to give
            return cls(uid, os.getegid(), str(uid), "/", "/bin/sh")

    @classmethod
    def _of(cls, pw: "pwd.struct_passwd") -> "JobUser":
        return cls(pw.pw_uid, pw.pw_gid, pw.pw_name, pw.pw_dir or "/", pw.pw_shell or "/bin/sh")

    def default_cwd(self) -> str:
        return self.home if os.path.isdir(self.home) else "/"


def base_env(daemon_env: Mapping[str, str], user: JobUser) -> Dict[str, str]:
    """What every job gets before the agent's own variables, its caps and its own ``env``."""
    refused = {var for var in MPS_DIRS if mps_dir_refusal(var, daemon_env)}  # each once
    env = {k: v for k, v in daemon_env.items()
           if (k in INHERITED or k.startswith(INHERITED_PREFIXES)) and k not in refused}
    if "CUDA_MPS_PIPE_DIRECTORY" in refused:
        env["CUDA_MPS_PIPE_DIRECTORY"] = NO_MPS_PIPES
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(HOME=user.home, USER=user.name, LOGNAME=user.name, SHELL=user.shell)
    return env
