"""A resolver of a test's own for one process and its children: a mount namespace (``unshare
-m``) in which /etc/resolv.conf names a name server on a loopback address nothing listens on,
so a name not in /etc/hosts fails as a resolver away does (EAI_AGAIN, "Temporary failure in
name resolution"), with no network; and /etc/hosts a file of the test's, which it writes a
name into to make it resolve (glibc reads the file at each lookup). Needs root that may
make a mount namespace and bind a file in it (CAP_SYS_ADMIN: not a default container's);
skipped, saying why, elsewhere."""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import List, Optional, Sequence

import pytest

NO_SERVER = "127.0.0.2"  # a loopback address no name server listens on (port 53 closed)


class Resolver:
    """The resolver's files, in ``folder``; ``command`` runs an argv under them."""

    def __init__(self, folder: Path):
        refused = namespace_refused()
        if refused is not None:
            pytest.skip("a resolver of the test's own is mounted over /etc/resolv.conf and "
                        "/etc/hosts in a mount namespace: " + refused)
        folder.mkdir(parents=True, exist_ok=True)
        self.conf, self.hosts = folder / "resolv.conf", folder / "hosts"
        self.conf.write_text("nameserver %s\noptions timeout:1 attempts:1\n" % NO_SERVER)
        self.hosts.write_text("127.0.0.1 localhost\n")

    def command(self, argv: Sequence[str]) -> List[str]:
        """``argv`` run with the test's resolver (its words given to sh as arguments, never
        as its script)."""
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount --bind "$1" /etc/resolv.conf && mount --bind "$2" /etc/hosts && '
                'shift 2 && exec "$@"', "sh", str(self.conf), str(self.hosts), *argv]

    def knows(self, name: str, address: str = "127.0.0.1") -> None:
        """``name`` resolves from now on (written into the same file: the mount is of it)."""
        with open(self.hosts, "a") as f:
            f.write("%s %s\n" % (address, name))

    def forgets(self, name: str) -> None:
        """``name`` fails to resolve from now on (EAI_AGAIN), as before ``knows``."""
        lines = self.hosts.read_text().splitlines(keepends=True)
        with open(self.hosts, "w") as f:  # (the same file: the mount is of it)
            f.writelines(line for line in lines if line.split()[1:] != [name])

    def answer(self, name: str) -> str:
        """What getaddrinfo says of ``name`` under this resolver: the first address, or the
        error's number and words (EAI_AGAIN for a name it does not know)."""
        done = subprocess.run(self.command([
            "python3", "-c", "import socket, sys\ntry:\n"
            "    print(socket.getaddrinfo(sys.argv[1], None)[0][4][0])\n"
            "except socket.gaierror as err:\n    print(err.errno, err.strerror)", name]),
            capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


@functools.lru_cache(maxsize=None)
def namespace_refused() -> Optional[str]:
    """Why this machine makes no mount namespace with a file bound in it, or None: probed
    once per process, as ``Resolver.command`` makes them (root alone is not enough: without
    CAP_SYS_ADMIN, a default Docker container's root, unshare is not permitted)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return "needs root and unshare"
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "mount", "--bind",
                           "/etc/hosts", "/etc/hosts"], capture_output=True, text=True,
                          timeout=60)  # (over itself, in a namespace gone as it ends)
    if done.returncode != 0:
        return "this root may not make one here (no CAP_SYS_ADMIN?): %s" % (
            done.stderr.strip() or "exit %d" % done.returncode)
    return None


EAI_AGAIN = "%d Temporary failure in name resolution" % socket.EAI_AGAIN
