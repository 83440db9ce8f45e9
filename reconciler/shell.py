"""Shells: completion scripts (bash, zsh, fish) generated from the argument parser by shtab.

Positional manifest paths and file options complete as files, folders as folders;
subcommands, options and choices come from the parser itself, so completion
never lags behind ``--help``.
"""

from __future__ import annotations

import argparse

SHELLS = ("bash", "zsh", "fish")
_FILES = {"paths", "hosts_override", "plan_file", "out"}
_FOLDERS = {"directory", "cache_dir"}


def completion(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for ``shell``; source it, or install it where the shell looks."""
    import shtab

    _annotate(parser)
    return str(shtab.complete(parser, shell=shell))


def _annotate(parser: argparse.ArgumentParser) -> None:
    import shtab

    for action in parser._actions:
        if action.dest in _FILES:
            action.complete = shtab.FILE  # type: ignore[attr-defined]
        elif action.dest in _FOLDERS:
            action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _annotate(sub)
