"""Where a host agent keeps its files, derived from the state dir so every bridge finds its daemon.

The socket lives under /tmp in a 0700 directory with a short name: unix socket paths are limited
to 108 bytes, and a state dir in a long home path would not fit.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from dataclasses import dataclass
from typing import Dict, List


@dataclass(frozen=True)
class AgentPaths:
    state_dir: str

    @property
    def socket_dir(self) -> str:
        return "/tmp/fractui-%d" % os.getuid()

    @property
    def digest(self) -> str:
        """A short name for this state dir, for places shared by all of a user's agents."""
        return hashlib.sha1(os.path.realpath(self.state_dir).encode()).hexdigest()[:16]

    @property
    def socket(self) -> str:
        return os.path.join(self.socket_dir, self.digest + ".sock")

    @property
    def pid_file(self) -> str:
        return os.path.join(self.state_dir, "daemon.pid")

    @property
    def lock_file(self) -> str:
        return os.path.join(self.state_dir, "daemon.lock")

    @property
    def log_file(self) -> str:
        return os.path.join(self.state_dir, "daemon.log")

    @property
    def sim_state(self) -> str:
        return os.path.join(self.state_dir, "sim-gpus.json")

    @property
    def jobs_db(self) -> str:
        return os.path.join(self.state_dir, "jobs.db")

    @property
    def jobs_dir(self) -> str:
        return os.path.join(self.state_dir, "jobs")

    def make_socket_dir(self) -> None:
        """Create the 0700 socket directory, refusing one that another user could reach."""
        os.makedirs(self.socket_dir, mode=0o700, exist_ok=True)
        st = os.lstat(self.socket_dir)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise RuntimeError("%s is not a directory owned by uid %d" % (
                self.socket_dir, os.getuid()))
        if st.st_mode & 0o077:
            os.chmod(self.socket_dir, 0o700)


def _code_root() -> str:
    """The directory (or zipapp) that holds the remote_agent package now running."""
    import remote_agent

    return os.path.dirname(os.path.dirname(os.path.abspath(remote_agent.__file__)))


def agent_command() -> List[str]:
    """How to start this same agent code again (the daemon, a shim): the zipapp when it runs
    from one, else the package (``agent_env`` makes it importable)."""
    root = _code_root()
    if os.path.isfile(root):  # .../agent-<hash>.pyz
        return [sys.executable, root]
    return [sys.executable, "-m", "remote_agent"]


def agent_env(base: Dict[str, str]) -> Dict[str, str]:
    """``base`` with this agent's code first on PYTHONPATH, so a child runs the same version
    whatever its working directory."""
    env = dict(base)
    root = _code_root()
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env["PYTHONPATH"] = os.pathsep.join([root] + parts)
    return env
