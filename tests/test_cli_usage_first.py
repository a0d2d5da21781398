"""A usage error is said as one (exit 2) before any store or host is reached: with the store
down, ``fractui cordon gpu-x`` (a typo) was said as the store's error, exit 1, and the typo
was found only once the store was back."""

from __future__ import annotations

import pytest

from tests.cli_run import closed_port, in_process, leaks

CONFIG = """\
[store]
url = "postgresql://127.0.0.1:%d/fractui"

[[hosts]]
name = "gpu-a"
host = "127.0.0.1"
port = %d

[[teams]]
name = "vision"
quota_gpus = 1

[[queues]]
name = "whole"
gpus = 1
team = "vision"
"""

# (argv, words the usage error says): each verb, with a word the config or the syntax refuses
CASES = [
    (["cordon", "gpu-x"], "unknown host 'gpu-x'"),
    (["drain", "gpu-x", "0"], "unknown host 'gpu-x'"),
    (["cordon", "gpu-a", "zero"], "zero"),
    (["place", "12", "gpu-x", "0"], "unknown host 'gpu-x'"),
    (["place", "twelve", "gpu-a", "0"], "twelve"),
    (["move", "12", "gpu-x", "0"], "unknown host 'gpu-x'"),
    (["launch", "gpu-x", "0", "--memory-mib", "100", "--", "true"], "unknown host 'gpu-x'"),
    (["stop", "gpu-x/j1"], "unknown host 'gpu-x'"),
    (["mig", "gpu-x", "0", "--mode", "on"], "unknown host 'gpu-x'"),
    (["mig", "gpu-x", "0"], "mig takes one of"),
    (["submit", "--queue", "nope", "--", "true"], "nope"),
    (["submit", "--queue", "whole", "--team", "nope", "--", "true"], "nope"),
    (["cancel", "twelve"], "twelve"),
    (["requeue", "twelve"], "twelve"),
    (["preempt", "twelve"], "twelve"),
    (["audit", "twelve"], "twelve"),
    (["jobs", "gpu-x/j1"], "gpu-x"),
    (["logs", "gpu-x/j1"], "unknown host 'gpu-x'"),
    (["logs", "twelve"], "twelve"),
    (["report", "--since", "1h", "--until", "2h"], "must be before --until"),
    (["report", "--since", "2026-12-02", "--until", "2026-12-01"], "must be before --until"),
    (["jobs", "gpu-x"], "gpu-x"),
    (["jobs", "gpu-a", "--limit", "5"], "--limit"),
    (["stop", "gpu-a/"], "gpu-a/"),
    (["move", "twelve", "gpu-a", "0"], "twelve"),
    (["place", "12", "gpu-a", "0", "--start", "1"], "--start goes with --profile"),
    (["mig", "gpu-a", "0", "--mode", "on", "--destroy-idle"], "--destroy-idle"),
    (["launch", "gpu-a", "0", "--memory-mib", "100"], "launch needs the program"),
    (["submit", "--queue", "whole", "--env", "NOEQUALS", "--", "true"], "NOEQUALS"),
    (["uncordon", "gpu-a", "zero"], "zero"),
    (["trust", "gpu-x"], "unknown host 'gpu-x'"),
    (["doctor", "gpu-x"], "unknown host 'gpu-x'"),
]


@pytest.mark.parametrize("argv,words", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_a_usage_error_is_said_before_the_store_is_opened(tmp_path, capfd, argv, words):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG % (closed_port(), closed_port()))
    code, out, err = in_process(capfd, ["--config", str(config), *argv])
    assert code == 2 and words in err and not leaks(err), (code, out, err)
    assert "store" not in err, err  # (not the store's words: it was never asked)
