"""The agent zipapp: reproducible bytes, the right content, and it really serves from one file."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import types
import zipfile
from typing import Any, Dict, List

import pytest

import remote_agent
from fractui.fleet import zipapp
from fractui.fleet.zipapp import build_agent_archive, write_archive
from tests.conftest import stop_host
from tests.test_jobs import alive

PACKAGE = os.path.dirname(os.path.abspath(remote_agent.__file__))


def _names(data: bytes) -> List[str]:
    return zipfile.ZipFile(io.BytesIO(data)).namelist()


def _copy_package(tmp_path) -> str:
    copy = str(tmp_path / "pkg" / "remote_agent")
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _bare_env() -> Dict[str, str]:
    """Our environment without PYTHONPATH: only the zipapp can supply the agent's code."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_two_builds_give_identical_bytes_and_hash():
    first, second = build_agent_archive(), build_agent_archive()
    assert first.data == second.data
    assert first.sha256 == second.sha256
    assert first.name == "agent-%s.pyz" % first.sha256[:16]


def test_the_hash_changes_with_the_content_and_only_with_it(tmp_path):
    original = build_agent_archive()
    copy = _copy_package(tmp_path)
    # Bytecode caches and stray files in them are never content: they must not count.
    os.makedirs(os.path.join(copy, "gpu", "__pycache__"))
    for stray in ("stray.py", "stray.json"):
        with open(os.path.join(copy, "gpu", "__pycache__", stray), "w") as f:
            f.write("# not shipped\n")
    assert build_agent_archive(copy).sha256 == original.sha256
    with open(os.path.join(copy, "cli.py"), "a") as f:
        f.write("# one more line\n")
    changed = build_agent_archive(copy)
    assert changed.sha256 != original.sha256
    assert changed.name != original.name


def test_the_archive_holds_the_agent_and_pynvml_with_fixed_metadata():
    archive = build_agent_archive()
    zf = zipfile.ZipFile(io.BytesIO(archive.data))
    names = zf.namelist()
    for name in ("__main__.py", "pynvml.py", "remote_agent/__init__.py",
                 "remote_agent/gpu/mig_profiles.json"):
        assert name in names
    assert not [n for n in names if "__pycache__" in n or not n.endswith((".py", ".json"))]
    assert names == sorted(names)
    assert zf.comment == b""
    for info in zf.infolist():
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert info.external_attr == 0o644 << 16
        assert info.create_system == 3
        assert info.extra == b"" and info.comment == b""
        assert info.compress_type == zipfile.ZIP_DEFLATED
    with open(os.path.join(PACKAGE, "gpu", "mig_profiles.json"), "rb") as f:
        assert zf.read("remote_agent/gpu/mig_profiles.json") == f.read()


def test_the_vendored_pynvml_is_the_installed_one_and_imports_from_the_zip(tmp_path):
    path = write_archive(build_agent_archive(), str(tmp_path))
    with open(importlib.util.find_spec("pynvml").origin, "rb") as f:
        assert zipfile.ZipFile(path).read("pynvml.py") == f.read()
    # -I -S: no PYTHONPATH, no site-packages; the zip is the only place pynvml can come from.
    probe = "import sys; sys.path.insert(0, sys.argv[1]); import pynvml; print(pynvml.__file__)"
    out = subprocess.run([sys.executable, "-I", "-S", "-c", probe, path], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    assert out.strip() == os.path.join(path, "pynvml.py")


@pytest.mark.parametrize("origin, why", [
    (None, "not importable"),
    ("/site-packages/pynvml.cpython-311-x86_64-linux-gnu.so", "not importable"),
    ("/site-packages/pynvml/__init__.py", "is a package"),
])
def test_a_pynvml_that_cannot_be_vendored_is_refused_clearly(monkeypatch, origin, why):
    spec = None if origin is None else types.SimpleNamespace(origin=origin)
    monkeypatch.setattr(zipapp.importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(RuntimeError, match=why):
        build_agent_archive()


def test_write_archive_is_atomic_and_named_by_the_hash(tmp_path):
    archive = build_agent_archive()
    target = str(tmp_path / "cache")
    path = write_archive(archive, target)
    assert path == os.path.join(target, archive.name)
    assert write_archive(archive, target) == path  # rewriting the same content is harmless
    assert os.listdir(target) == [archive.name]  # no temporary file left behind
    with open(path, "rb") as f:
        assert f.read() == archive.data


def test_the_zipapp_prints_the_agent_version(tmp_path):
    path = write_archive(build_agent_archive(), str(tmp_path))
    out = subprocess.run([sys.executable, path, "--version"], capture_output=True, text=True,
                         timeout=30, env=_bare_env(), cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == remote_agent.__version__


def _processes_mentioning(text: str) -> List[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        if text in cmdline:
            found.append(pid + ": " + cmdline)
    return found


def _serve(path: str, state_dir: str, cwd: str, *requests: Dict[str, Any]) -> List[Any]:
    lines = "".join(json.dumps(dict(r, jsonrpc="2.0")) + "\n" for r in requests)
    out = subprocess.run([sys.executable, path, "serve", "--stdio", "--state-dir", state_dir,
                          "--sim", "1xL4"], input=lines, capture_output=True, text=True,
                         timeout=60, env=_bare_env(), cwd=cwd)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_serve_runs_the_bridge_and_its_daemon_from_the_zipapp_alone(tmp_path):
    """The bridge starts a detached daemon with ``agent_command()``: from a zipapp that must be
    the zipapp again. The archive is built from a copy with a version no other copy has, so a
    reply carrying it proves the code came from the .pyz, not from an installed remote_agent."""
    copy = _copy_package(tmp_path)
    init = os.path.join(copy, "__init__.py")
    with open(init) as f:
        source = f.read()
    marked = remote_agent.__version__ + ".4242"
    source, count = re.subn(r'^__version__ = ".*"$', '__version__ = "%s"' % marked, source,
                            flags=re.M)
    assert count == 1
    with open(init, "w") as f:
        f.write(source)
    path = write_archive(build_agent_archive(copy), str(tmp_path / "cache"))
    state_dir = str(tmp_path / "st")
    try:
        hello, version = _serve(path, state_dir, str(tmp_path),
                                {"id": 1, "method": "hello"}, {"id": 2, "method": "daemon.version"})
        assert hello["id"] == 1 and hello["result"]["backend"] == "sim", hello
        assert hello["result"]["agent_version"] == marked
        assert version["result"]["version"] == marked
        pid = version["result"]["pid"]
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = f.read().split(b"\0")
        assert argv[1].decode() == path  # [sys.executable, <pyz>, "daemon", ...]
        (stop,) = _serve(path, state_dir, str(tmp_path), {"id": 3, "method": "daemon.shutdown"})
        assert stop["result"]["stopping"] is True
        deadline = time.time() + 15
        while alive(pid) and time.time() < deadline:  # a zombie has ended: init reaps it
            time.sleep(0.05)
    finally:
        stop_host(state_dir)  # whatever happened above, leave nothing running
    assert not _processes_mentioning(state_dir)
