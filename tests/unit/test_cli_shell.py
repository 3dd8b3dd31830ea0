"""The CLI is a shell (docs/architecture.md, "Where to put things"): each command parses
its flags, calls one library function and prints. A command that grows past a few lines
is logic that belongs in the library, where the GitHub Action and the operator reach it."""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Iterator

import click
import pytest

from ocigitops import cli

pytestmark = pytest.mark.unit

#: Lines from ``def`` to the end of a command's function (its flags are decorators, above).
MAX_LINES = 20
#: Commands allowed to be longer (none).
EXEMPT: set[tuple[str, ...]] = set()


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], click.Command]]:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


def test_every_command_is_a_few_lines() -> None:
    commands = dict(_commands(cli.main))
    assert ("push", "artifact") in commands and ("verify", "artifact") in commands
    long: list[str] = []
    for path, command in sorted(commands.items()):
        assert command.callback is not None
        fn = inspect.unwrap(command.callback)  # the flag-grouping decorators wrap it
        node = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]
        assert isinstance(node, ast.FunctionDef)
        assert node.end_lineno is not None
        size = node.end_lineno - node.lineno + 1  # node.lineno is the def line
        if size > MAX_LINES and path not in EXEMPT:
            long.append(f"{' '.join(path)}: {size} lines")
    assert not long, "commands doing more than parse, call, print:\n" + "\n".join(long)
