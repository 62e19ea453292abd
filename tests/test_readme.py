"""README's snippets run, so they cannot drift from the code: every ``sgdip`` command line of its
bash blocks parses with the command's own parser, and its Python blocks run (at a smaller size)."""

import re
import shlex
from pathlib import Path

import pytest

from sgdip_jax.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.S)


def _commands():
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("#")[0].split("&&"):
                words = shlex.split(part)
                if words and words[0] == "sgdip":
                    yield words[1:]


COMMANDS = list(_commands())


def test_readme_has_commands_and_python():
    assert len(COMMANDS) >= 8 and _blocks("python")


@pytest.mark.parametrize("words", COMMANDS, ids=[" ".join(w[:2]) for w in COMMANDS])
def test_readme_command_parses(words):
    build_parser().parse_args(words)


@pytest.mark.parametrize("block", _blocks("python"), ids=lambda b: "python")
def test_readme_python_runs(block):
    """The snippet as written, on a 32 px case with 10 iterations (the sizes are the only change)."""
    small = block.replace("size=128", "size=32").replace('"iterations": 500', '"iterations": 10')
    assert small != block
    exec(compile(small, str(README), "exec"), {})
