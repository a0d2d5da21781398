"""The host agent must run on a bare host: Python >= 3.9, the standard library and pynvml."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys

from tests.conftest import REPO

AGENT = os.path.join(REPO, "remote_agent")


def vermin(*paths: str) -> subprocess.CompletedProcess:
    exe = shutil.which("vermin", path=os.path.dirname(sys.executable)) or shutil.which("vermin")
    assert exe, "vermin is a test dependency: pip install -e '.[test]'"
    return subprocess.run([exe, "-t=3.9-", "--violations", "--no-tips", *paths],
                          capture_output=True, text=True)


def test_vermin_finds_nothing_newer_than_python_3_9_in_the_agent():
    result = vermin(AGENT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_vermin_would_catch_a_newer_construct(tmp_path):
    newer = tmp_path / "newer.py"
    newer.write_text("match 1:\n    case 1:\n        pass\n")
    assert vermin(str(newer)).returncode != 0


def test_the_agent_imports_only_the_standard_library_pynvml_and_itself():
    allowed = set(sys.stdlib_module_names) | {"pynvml", "remote_agent"}
    for folder, _, files in os.walk(AGENT):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            tree = ast.parse(open(path, encoding="utf-8").read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    roots = [a.name.split(".")[0] for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    roots = [node.module.split(".")[0]]
                else:
                    continue
                for root in roots:
                    assert root in allowed, "%s imports %s" % (path, root)
