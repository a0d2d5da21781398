"""A derandomized hypothesis test draws the same examples however it is run: its file alone,
or in a worker of the suite's that ran other test files first (pytest-xdist's loadfile), so
a failure the suite found is found again by its file alone."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO

# Examples of a derandomized test, in a process that imported ``first`` before the tests'
# conftest: a test file run before it in the same worker would have.
DRAWS = """
import hashlib
%s
import tests.conftest
from hypothesis import given, settings, strategies as st
seen = []

@settings(max_examples=300, derandomize=True, database=None)
@given(st.text(max_size=30), st.integers(), st.floats())
def draws(text, number, real):
    seen.append(repr((text, number, real)))

draws()
print(hashlib.sha256("\\n".join(seen).encode()).hexdigest())
"""


def _examples(tmp_path, first: str) -> str:
    done = subprocess.run([sys.executable, "-c", DRAWS % first], capture_output=True,
                          text=True, cwd=str(tmp_path), timeout=120,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_derandomized_test_draws_the_same_whatever_was_imported_before_it(tmp_path):
    """Hypothesis draws some values from the constants of the project's modules it finds
    imported: the ones another test file had imported first changed every example after."""
    alone = _examples(tmp_path, "")
    assert _examples(tmp_path, "import fractui.tui.app, fractui.scheduler.service") == alone
    assert _examples(tmp_path, "import remote_agent.serve, benchmarks.openb") == alone
