"""A real podman for the container tests, and a small image the tests build themselves.

No image registry is reachable, so the image is assembled here: the distribution's python3 (the
binary, the shared libraries it and its extension modules load, its standard library) plus this
checkout's ``remote_agent`` and nvidia-ml-py's ``pynvml.py`` under /opt/fractui, packed as a tar
and loaded with ``podman import``. Its tag carries a hash of what went in, so an unchanged
checkout reuses it. podman runs with a containers.conf of the tests' own: the runc runtime (crun
refuses the hybrid cgroup hierarchy of these machines) and ``default_ulimits = []``.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import uuid
import zipfile
from dataclasses import dataclass
from typing import List, Optional, Sequence

import pytest

from fractui.fleet.zipapp import build_agent_archive

PYTHON = "/usr/bin/python3"
CONTAINERS_CONF = """\
[containers]
default_ulimits = []

[engine]
runtime = "runc"
"""
IMAGE_CODE = "/opt/fractui"  # where the image keeps the agent's code (on its PYTHONPATH)
IMAGE_AGENT = IMAGE_CODE + "/agent.pyz"  # the agent zipapp, as deploy/kubernetes puts it


def why_no_podman() -> Optional[str]:
    """Why the container tests cannot run here, or None when they can."""
    for tool in ("podman", "runc"):
        if shutil.which(tool) is None:
            return "%s is not installed (.ci/run installs podman and runc)" % tool
    if not os.path.exists(PYTHON):
        return "%s is missing: the test image is built from the distribution's python3" % PYTHON
    return None


def _python_files() -> List[str]:
    """The python binary and every shared library it or its extension modules load, and
    libgcc_s, which glibc loads by name (not linked: ldd does not list it) when a thread ends."""
    real = os.path.realpath(PYTHON)
    version = os.path.basename(real)  # python3.11
    found = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    files = {real} | set(re.findall(r"libgcc_s\.so\.1 \(libc6[^)]*\) => (\S+)", found))
    for binary in [real] + glob.glob("/usr/lib/%s/lib-dynload/*.so" % version):
        out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
        files.update(re.findall(r"(/\S+\.so[^\s]*)", out))
    return sorted(files)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def build_rootfs(path: str) -> None:
    """Write the image's root filesystem as a tar at ``path``."""
    real = os.path.realpath(PYTHON)
    version = os.path.basename(real)
    archive = build_agent_archive()

    def no_tests(info: tarfile.TarInfo) -> Optional[tarfile.TarInfo]:
        parts = info.name.split("/")
        return None if "__pycache__" in parts or parts[3:4] == ["test"] else info

    with tarfile.open(path, "w") as tar:
        for d, mode in (("tmp", 0o1777), ("proc", 0o755), ("sys", 0o755), ("dev", 0o755),
                        ("etc", 0o755), ("root", 0o700), ("run", 0o755), ("opt", 0o755),
                        ("usr", 0o755), ("usr/bin", 0o755)):
            _add_dir(tar, d, mode)
        for f in _python_files():
            tar.add(os.path.realpath(f), arcname=f.lstrip("/"))
        tar.add("/usr/lib/%s" % version, arcname="usr/lib/%s" % version, filter=no_tests)
        link = tarfile.TarInfo("usr/bin/python3")
        link.type, link.linkname = tarfile.SYMTYPE, version
        tar.addfile(link)
        _add_dir(tar, IMAGE_CODE.lstrip("/"))
        _add_bytes(tar, IMAGE_AGENT.lstrip("/"), archive.data)
        with zipfile.ZipFile(io.BytesIO(archive.data)) as code:
            for name in code.namelist():
                if name != "__main__.py":  # unpacked, so ``python3 -m remote_agent`` runs
                    _add_bytes(tar, "%s/%s" % (IMAGE_CODE.lstrip("/"), name), code.read(name))
        _add_bytes(tar, "etc/passwd", b"root:x:0:0:root:/root:/nonexistent\n")
        _add_bytes(tar, "etc/group", b"root:x:0:\n")


@dataclass
class Podman:
    """The podman command with the tests' containers.conf, and the image they built."""

    conf: str
    image: str = ""

    @property
    def env(self) -> dict:
        return dict(os.environ, CONTAINERS_CONF=self.conf)

    def run(self, args: Sequence[str], check: bool = True, timeout: float = 120,
            input_text: Optional[str] = None) -> subprocess.CompletedProcess:
        """``input_text`` is the command's stdin (``exec -i``); without it, none."""
        done = subprocess.run(["podman", *args], capture_output=True, text=True,
                              env=self.env, timeout=timeout, input=input_text,
                              stdin=None if input_text is not None else subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise AssertionError("podman %s: exit %d: %s" % (
                " ".join(args), done.returncode, done.stderr.strip()))
        return done

    def start_container(self, *options: str, command: Sequence[str] = ()) -> str:
        """A detached container of the test image that sleeps until removed; its name."""
        name = "fractui-test-%s" % uuid.uuid4().hex[:10]
        self.run(["run", "-d", "--name", name, *options, self.image,
                  *(command or [PYTHON, "-c", "import signal; signal.pause()"])])
        return name

    def remove(self, name: str) -> None:
        self.run(["rm", "-f", "-t", "0", name], check=False)


def _remove_older(tool: Podman) -> None:
    """Images of earlier checkouts: one per change of the agent's code, 64 MB each. One still in
    use by another run is refused by podman and stays."""
    listed = tool.run(["images", "--format", "{{.Repository}}:{{.Tag}}",
                       "--filter", "reference=localhost/fractui-test"], check=False)
    for image in listed.stdout.split():
        if image != tool.image:
            tool.run(["rmi", image], check=False)


@pytest.fixture(scope="session")
def podman(tmp_path_factory) -> Podman:
    """A working podman and the test image, or the test skips saying why."""
    why = why_no_podman()
    if why:
        pytest.skip(why)
    root = tmp_path_factory.mktemp("podman")
    conf = root / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    os.environ["CONTAINERS_CONF"] = str(conf)  # the agents the tests start run podman too
    tar = str(root / "rootfs.tar")
    build_rootfs(tar)
    with open(tar, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    tool = Podman(str(conf), "localhost/fractui-test:%s" % digest)
    if tool.run(["image", "exists", tool.image], check=False).returncode != 0:
        tool.run(["import", tar, tool.image])
        _remove_older(tool)
    probe = tool.run(["run", "--rm", tool.image, PYTHON, "-c", "import sqlite3; print('ok')"],
                     check=False)
    if probe.returncode != 0 or probe.stdout.strip() != "ok":
        pytest.fail("the test image does not run python3: %s" % (probe.stderr or probe.stdout))
    return tool
