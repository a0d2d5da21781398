"""The wheel pip builds from this tree holds every file fractui reads at run time. The suite
runs on an editable install, which reads the tree itself: a migration, a theme, the TUI's CSS
or the agent's data that ``package-data`` leaves out is missed only by an installed wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

from fractui.fleet.zipapp import build_agent_archive
from tests.conftest import REPO

PACKAGES = ("fractui", "remote_agent")


def _copy_of_the_tree(dest) -> None:
    """The tree as git would commit it now: tracked files and new ones not ignored, as they
    are (links kept as links: the package's themes link), no build output nor caches; a
    tracked file deleted and not yet committed left out, as ``git commit -a`` leaves it."""
    listed = subprocess.run(["git", "-C", REPO, "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], capture_output=True, check=True).stdout
    there = [n for n in listed.split(b"\0") if n and os.path.lexists(os.path.join(
        os.fsencode(REPO), n))]
    archive = subprocess.run(["tar", "-C", REPO, "--null", "-T", "-", "-cf", "-"],
                             input=b"\0".join(there), capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def _package_files(tree) -> set:
    """Every file of the packages in ``tree``, by its name in a wheel (through the links)."""
    found = set()
    for package in PACKAGES:
        for folder, dirs, names in os.walk(os.path.join(tree, package), followlinks=True):
            found.update(os.path.relpath(os.path.join(folder, n), tree) for n in names
                         if os.path.isfile(os.path.join(folder, n)))
    return found


def test_the_wheel_holds_every_file_of_the_packages_and_builds_the_same_agent(tmp_path):
    tree, out, unpacked = tmp_path / "tree", tmp_path / "dist", tmp_path / "site"
    tree.mkdir()
    _copy_of_the_tree(tree)
    subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta; "
                    "build_meta.build_wheel(sys.argv[1])", str(out)], cwd=tree, check=True,
                   capture_output=True)
    [wheel] = os.listdir(out)
    with zipfile.ZipFile(out / wheel) as zf:
        held = set(zf.namelist())
        zf.extractall(unpacked)
    assert sorted(_package_files(tree) - held) == []
    # The agent a wheel's fractui deploys is the checkout's, byte for byte.
    from_wheel = build_agent_archive(str(unpacked / "remote_agent"))
    assert from_wheel.data == build_agent_archive().data
