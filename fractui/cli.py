"""The ``fractui`` command."""

from __future__ import annotations

import argparse
from typing import List, Optional

from fractui import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fractui", description="Share every GPU of a fleet between many jobs.")
    parser.add_argument("--version", action="version", version="fractui %s" % __version__)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    _parser().parse_args(argv)
    _parser().print_help()
    return 0
