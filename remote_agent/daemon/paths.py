"""Where a host agent keeps its files, derived from the state dir so every bridge finds its daemon.

The socket lives in a 0700 directory with a short name: unix socket paths are limited to 108
bytes, and a state dir in a long home path would not fit. Root's is /run/fractui, which no other
user can make first (``runtime_dir``); another user's is /tmp/fractui-UID, in /tmp, which is
shared with every local user (who could make it first: the agent then refuses it, and cannot
start). Both ends check that directory before using it, as tmux does: a real directory (not a
symlink) of the agent's user, mode 0700, and a socket of the same user.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional

from remote_agent.daemon.trust import (SET_ASIDE, UnsafePath, check_private, check_seen,
                                        check_tree, grantees, open_dir, private_dir,
                                        private_tree, python_module, seen_at)
from remote_agent.jobs.output import PIPE_NAME

ROOT_RUNTIME_BASE = "/run"


@dataclass(frozen=True)
class RuntimeDir:
    """The socket dir of this user's agents, and why root's safer place was not used ("" where
    it was, and for every other user)."""
    path: str
    why_not: str


def tmp_socket_dir() -> str:
    """The socket dir in /tmp: a user's, root's fallback, and where agents up to 0.1.0 put
    every socket."""
    return "/tmp/fractui-%d" % os.getuid()


def runtime_dir() -> RuntimeDir:
    """Where this user's agents keep their sockets: root's in /run/fractui, which no other
    user can make first, where /run takes it; else /tmp/fractui-UID. Not $XDG_RUNTIME_DIR:
    logind removes it at the user's last logout (no linger), and with it the socket of a
    daemon that outlives every session, which no bridge would then find."""
    if os.getuid() != 0:
        return RuntimeDir(tmp_socket_dir(), "")
    try:
        _check_root_runtime_base()
    except (UnsafePath, OSError) as err:
        return RuntimeDir(tmp_socket_dir(), "the agent's sockets are in %s, not under %s: %s"
                          % (tmp_socket_dir(), ROOT_RUNTIME_BASE, err.strerror
                             if isinstance(err, OSError) and err.strerror else err))
    return RuntimeDir(os.path.join(ROOT_RUNTIME_BASE, "fractui"), "")


def _check_root_runtime_base() -> None:
    """Refuse (UnsafePath) a /run another user could change, or one where no directory can be
    made (a container's read-only root filesystem)."""
    check_tree(ROOT_RUNTIME_BASE, "the runtime dir")
    if not stat.S_ISDIR(os.stat(ROOT_RUNTIME_BASE).st_mode):
        raise UnsafePath("it is not a directory")
    if not os.path.lexists(os.path.join(ROOT_RUNTIME_BASE, "fractui")) and \
            not os.access(ROOT_RUNTIME_BASE, os.W_OK):
        raise UnsafePath("no directory can be made in it (a read-only filesystem?)")


@dataclass(frozen=True)
class AgentPaths:
    state_dir: str

    @property
    def socket_dir(self) -> str:
        return runtime_dir().path

    @property
    def old_socket_dirs(self) -> List[str]:
        """Where an agent of an earlier version may still listen: its daemon is found there, and
        handed over from."""
        return [d for d in (tmp_socket_dir(),) if d != self.socket_dir]

    @property
    def digest(self) -> str:
        """A short name for this state dir, for places shared by all of a user's agents."""
        return hashlib.sha1(os.fsencode(os.path.realpath(self.state_dir))).hexdigest()[:16]

    @property
    def socket(self) -> str:
        return self.socket_in(self.socket_dir)

    def socket_in(self, folder: str) -> str:
        """This state dir's socket in the socket dir ``folder``."""
        return os.path.join(folder, self.digest + ".sock")

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
    def sim_dir(self) -> str:
        """The simulated GPUs' state, in a directory of its own: a container job gets it
        mounted (its device nodes), and nothing else of the state dir."""
        return os.path.join(self.state_dir, "sim")

    @property
    def sim_state(self) -> str:
        return os.path.join(self.sim_dir, "gpus.json")

    @property
    def jobs_db(self) -> str:
        return os.path.join(self.state_dir, "jobs.db")

    @property
    def jobs_dir(self) -> str:
        return os.path.join(self.state_dir, "jobs")

    @property
    def sudo_logins(self) -> str:
        """The logins that reached this agent through sudo (remote_agent.jobs.powers)."""
        return os.path.join(self.state_dir, "sudo-logins")

    @property
    def mig_journal(self) -> str:
        """MIG changes in progress (remote_agent.mig.journal)."""
        return os.path.join(self.state_dir, "mig-changes")

    @property
    def gpu_health(self) -> str:
        """GPUs a failed MIG change left degraded (remote_agent.mig.health)."""
        return os.path.join(self.state_dir, "gpu-health.json")

    @property
    def made_again(self) -> str:
        """The MIG instances rolled-back changes made again (remote_agent.mig.made_again)."""
        return os.path.join(self.state_dir, "mig-made-again.json")

    @property
    def xid_events(self) -> str:
        """The GPUs' recent XID errors (remote_agent.gpu.xid)."""
        return os.path.join(self.state_dir, "xid-events.json")

    def check(self, contents: bool = False) -> None:
        """Refuse a state dir another user could change (UnsafePath), creating it 0700 where
        missing. With ``contents``, every file and directory the daemon trusts in it too
        (the caller holds the daemon lock, so no other daemon is changing them); a job's
        directory, and what is in it, is ``unread_job_dir``'s to judge, job by job."""
        private_tree(self.state_dir, "state dir")
        if not contents:
            return
        for path, what in ((self.lock_file, "daemon lock"), (self.pid_file, "pid file"),
                           (self.log_file, "daemon log"), (self.sim_state, "simulator state"),
                           (self.sim_state + ".lock", "simulator lock"),
                           (self.sudo_logins, "sudo logins"),
                           (self.gpu_health, "GPU health marks"),
                           (self.made_again, "MIG instances made again"),
                           (self.xid_events, "XID events")):
            check_private(path, what)
        if os.path.lexists(self.sim_dir):
            private_dir(self.sim_dir, "simulator directory")
        if os.path.lexists(self.mig_journal):
            private_dir(self.mig_journal, "MIG change journal")
            for name in sorted(os.listdir(self.mig_journal)):
                check_private(os.path.join(self.mig_journal, name), "MIG change journal entry")
        if os.path.lexists(self.jobs_dir):
            private_dir(self.jobs_dir, "jobs directory")

    def unread_job_dirs(self) -> Dict[str, str]:
        """The entries of ``jobs/`` (by name) that are no job directory the agent would read,
        each with why, in words (``unread_job_dir``)."""
        names = sorted(os.listdir(self.jobs_dir)) if os.path.lexists(self.jobs_dir) else []
        judged = {name: self.unread_job_dir(name) for name in names}
        return {name: why for name, why in judged.items() if why is not None}

    def unread_job_dir(self, name: str, entries: bool = True) -> Optional[str]:
        """Why the job directory ``name`` is left unread, in words; None where it is read (or
        not there). Without ``entries``, the folder alone is judged, not what is in it (a
        running job's, at each look: each of its files is refused at its open, if need be,
        as ``open_private`` refuses one). ``jobs/`` is of the agent's own (``check``), so
        only the agent's user (or root) changed what is in it: most often a job, which runs
        as that user, in its own folder (an entry put there; the folder made writable by
        others, given away, or replaced by a symlink or a file). Its job is the one harmed:
        its directory is left unread, and every other job is served (docs/decisions.md).
        The folder is opened without following a symlink and judged on that descriptor, its
        entries by ``lstat`` in it: nothing a job planted is followed."""
        job_dir = os.path.join(self.jobs_dir, name)
        try:
            fd = open_dir(job_dir, "job directory")
        except FileNotFoundError:
            return None
        except (UnsafePath, PermissionError) as err:  # (its mode taken away: 0000)
            return "its directory %s is not the agent's own as it made it, so the agent " \
                "leaves it unread: %s" % (job_dir, err)
        try:
            for entry in sorted(os.listdir(fd)) if entries else ():
                _check_job_entry(job_dir, entry, fd)
            if os.fstat(fd).st_mode & 0o077:  # read or entered by others: taken back
                os.fchmod(fd, 0o700)
        except (UnsafePath, PermissionError) as err:
            return "its directory %s holds what the agent did not make, so the agent leaves " \
                "it unread: %s" % (job_dir, err)
        finally:
            os.close(fd)
        return None

    def make_socket_dir(self) -> None:
        """Create the 0700 socket directory, or check the one there (UnsafePath if another
        user could reach it, or if it cannot be made: named, not taken for the state dir)."""
        folder = self.socket_dir
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass
        except OSError as err:
            raise UnsafePath("the agent's socket directory %s cannot be made: %s" % (
                folder, err.strerror or err)) from err
        self.check_socket_dir(folder)

    def check_socket_dir(self, folder: str = "") -> bool:
        """Whether the socket directory (or ``folder``, another one) exists; UnsafePath if it
        is not one we can trust."""
        folder = folder or self.socket_dir
        try:
            st = os.lstat(folder)
        except FileNotFoundError:
            return False
        fix = "remove it (rm -r %s, as root if you must) and connect again" % folder
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafePath("refusing the agent's socket directory %s: it is %s, not a "
                             "directory; %s" % (folder, "a symlink" if stat.S_ISLNK(
                                 st.st_mode) else "not a directory", fix))
        if st.st_uid != os.getuid():
            raise UnsafePath("refusing the agent's socket directory %s: it is owned by uid %d, "
                             "not by uid %d; another user may have made it to read the agent's "
                             "traffic. %s" % (folder, st.st_uid, os.getuid(),
                                              fix[0].upper() + fix[1:]))
        others = grantees(st, folder, 0o7)
        if others:
            raise UnsafePath("refusing the agent's socket directory %s: its mode is %04o, not "
                             "0700, so %s can reach the socket in it; %s" % (
                                 folder, stat.S_IMODE(st.st_mode), others, fix))
        return True

    def check_socket(self, folder: str = "") -> Optional[os.stat_result]:
        """The socket's stat (in ``folder``, where given) if there is one; UnsafePath if it is
        not a socket of ours."""
        path = self.socket_in(folder or self.socket_dir)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.getuid():
            raise UnsafePath("refusing %s: it is %s owned by uid %d, not a socket of uid %d (the "
                             "agent's user); remove it and connect again" % (
                                 path, "a socket" if stat.S_ISSOCK(st.st_mode)
                                 else "not a socket", st.st_uid, os.getuid()))
        return st


def _check_job_entry(job_dir: str, entry: str, dir_fd: int) -> None:
    """Refuse (UnsafePath) an entry of a job's directory (``job_dir``, open as ``dir_fd``)
    unless it is what the agent makes there, of its own: a regular file, the output pipe (a
    FIFO), a directory a shim set aside (never read: pruned whole with its job's directory).
    Nothing is followed: the entry is held by an ``O_PATH`` descriptor (which opens nothing),
    judged, its ACL read and what others may read of it taken back, all through that, never
    its name again (``trust.seen_at``)."""
    try:
        held = os.open(entry, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:  # (a live shim's temporary file, renamed meanwhile)
        return
    try:
        st = os.fstat(held)
        aside = SET_ASIDE in entry and stat.S_ISDIR(st.st_mode)
        check_seen(st, os.path.join(job_dir, entry), "directory set aside" if aside else
                   "job file", fifo_ok=entry == PIPE_NAME, dir_ok=aside, at=seen_at(held))
        if st.st_mode & 0o077:
            os.chmod(seen_at(held), 0o700 if aside else 0o600)
    finally:
        os.close(held)


def _code_root() -> str:
    """The directory (or zipapp) that holds the remote_agent package now running."""
    import remote_agent

    return os.path.dirname(os.path.dirname(os.path.abspath(remote_agent.__file__)))


_CODE_SUFFIXES = (".py", ".json")


def code_files(package_dir: str) -> Dict[str, bytes]:
    """Every source and data file of the package at ``package_dir``, by its name inside the
    agent's zipapp (``remote_agent/...``): what the agent's code is."""
    files: Dict[str, bytes] = {}
    for folder, dirs, names in os.walk(package_dir):
        dirs[:] = [d for d in dirs if d != "__pycache__" and not d.startswith(".")]
        for name in names:
            # Dotfiles are editor leftovers (emacs lock files are dangling links), not code.
            if name.startswith(".") or not name.endswith(_CODE_SUFFIXES):
                continue
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, package_dir).replace(os.sep, "/")
            with open(path, "rb") as f:
                files["remote_agent/" + rel] = f.read()
    return files


def code_hash() -> str:
    """A digest of the agent's code: the zipapp's bytes when it runs from one (it is built
    reproducibly), else the package's files. The same code gives the same digest on every run;
    any change to it gives another."""
    root = _code_root()
    digest = hashlib.sha256()
    if os.path.isfile(root):
        with open(root, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    else:
        for name, data in sorted(code_files(os.path.join(root, "remote_agent")).items()):
            digest.update(b"%s\0%d\0" % (os.fsencode(name), len(data)) + data)  # its bytes
    return digest.hexdigest()[:16]


def agent_command() -> List[str]:
    """How to start this same agent code again (the daemon, a shim): the zipapp when it runs
    from one, else the package (``agent_env`` makes it importable)."""
    root = _code_root()
    if os.path.isfile(root):  # .../agent-<hash>.pyz
        return [sys.executable, root]
    return python_module("remote_agent")


def agent_env(base: Dict[str, str]) -> Dict[str, str]:
    """``base`` with this agent's code first on PYTHONPATH, so a child runs the same version
    whatever its working directory."""
    env = dict(base)
    root = _code_root()
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env["PYTHONPATH"] = os.pathsep.join([root] + parts)
    return env
