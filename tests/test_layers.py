"""The CLI's verbs sit on top of the layers they use, and nothing below imports them: a module
of the TUI, the fleet, the scheduler or the store that reached into a verb's module (the TUI's
teams table once took a team's bound from the teams verb's) ties the layers together and
invites an import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = Path(REPO) / "fractui"
VERBS = {"cli", "__main__", "commands"} | {p.stem for p in PACKAGE.glob("*_commands.py")}
"""The modules of the verb layer: the command line, and the modules of its verbs."""


def _imported(path: Path) -> set[str]:
    """Every fractui module ``path`` imports, whether at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {"%s.%s" % (node.module, a.name) for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {name for name in found if name.split(".")[0] == "fractui"}


def test_no_module_below_the_verbs_imports_one_of_them():
    assert len(VERBS) > 4, VERBS  # (the verb modules were found where they are)
    below = [p for p in sorted(PACKAGE.rglob("*.py"))
             if not (p.parent == PACKAGE and p.stem in VERBS)]
    reaching = ["%s imports %s" % (p.relative_to(REPO), name) for p in below
                for name in sorted(_imported(p))
                if len(name.split(".")) > 1 and name.split(".")[1] in VERBS]
    assert reaching == [], reaching
