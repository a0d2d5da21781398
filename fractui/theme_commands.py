"""``fractui themes``: every theme file, shipped and the admin's, with what loaded and why the
others did not (file:line), so a theme the TUI left out is never a mystery. Needs no config;
with one, the theme its ``[tui] theme`` names is marked."""

from __future__ import annotations

import argparse

from fractui.config import Config
from fractui.outcome import EXIT_USAGE
from fractui.terminal import print_json, say
from fractui.tui.themes import DEFAULT, theme_files, theme_names, user_dir


def themes(config: Config, args: argparse.Namespace) -> int:
    files = theme_files()
    chosen = config.tui.theme or DEFAULT
    if args.json:
        print_json({"user_dir": user_dir(), "in_use": chosen, "themes": [
            {"path": f.path, "shipped": f.shipped, "name": f.name,
             "dark": f.theme.theme.dark if f.theme else None,
             "error": str(f.error) if f.error else None} for f in files]})
    else:
        yours = {f.name for f in files if f.theme is not None and not f.shipped}
        for f in files:
            if f.theme is not None:
                replaced = f.shipped and f.name in yours
                print("%s %-16s %-5s %-7s %s%s" % (
                    "*" if f.name == chosen and not replaced else " ", f.name,
                    "dark" if f.theme.theme.dark else "light",
                    "shipped" if f.shipped else "yours", f.path,
                    "  (replaced by yours)" if replaced else ""))
        if chosen not in {f.name for f in files if f.theme is not None}:
            print("* %-16s %s" % (chosen, "one of Textual's own" if chosen in theme_names()
                                  else "not a theme fractui knows: the TUI refuses it"))
        print("  your themes: %s/*.toml" % user_dir())
    # on stderr with --json too: its exit 2 must say why where a script's log shows it
    for f in files:
        if f.error is not None:
            say("theme left out: %s" % f.error)
    return EXIT_USAGE if any(f.error for f in files) else 0
