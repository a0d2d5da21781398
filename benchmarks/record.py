"""Writing measured tables into docs/benchmarks.md, each under its own heading, with the machine
they ran on — so a number in the docs always says where it came from."""

from __future__ import annotations

import datetime
import os
import platform
import re

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                   "benchmarks.md")
HEADER = ("# Benchmarks\n\nMeasured by the scripts in benchmarks/; each section is rewritten by "
          "its script's `--record`.\n")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    return "%s, %d cores, Linux %s, Python %s, %s" % (
        cpu, os.cpu_count() or 0, platform.release(), platform.python_version(),
        datetime.date.today().isoformat())


def record_section(title: str, body: str, where: str) -> None:
    text = open(DOC).read() if os.path.exists(DOC) else HEADER
    section = "## %s\n\nMachine: %s\n\n%s\n" % (title, where, body.rstrip())
    pattern = re.compile(r"^## %s\n.*?(?=^## |\Z)" % re.escape(title), re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + section
    with open(DOC, "w") as f:
        f.write(text.rstrip() + "\n")
