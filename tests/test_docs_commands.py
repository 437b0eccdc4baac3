"""The command lines in README.md and docs/*.md parse against the real CLI, so the docs cannot drift from it.

Every `qcompress ...` (also after a pipe, `&&`, `torchrun ... -m qcompress`) in a fenced shell block is parsed by
the CLI's own parser (click, under Typer) without running: an unknown option, a missing value or a wrong type
fails here. Shell variables and paths are just strings to the parser.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from qcompress.cli import app

# click's UsageError, from the click that Typer uses (recent Typer versions vendor their own copy).
UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A fenced block, opening fence to closing fence (line by line: a closing fence never opens a block); group 1 is the
# language, group 2 the body.
FENCE = re.compile(r"^```(\w*)\n(.*?)^```[ \t]*$", re.S | re.M)
SHELL = ("", "bash", "sh", "shell", "console")


def command_lines(text: str) -> list[str]:
    """The qcompress invocations of a markdown text's shell blocks, one string each (continuations joined)."""
    found = []
    for language, block in ((language, body) for language, body in FENCE.findall(text) if language in SHELL):
        for line in block.replace("\\\n", " ").splitlines():
            if language == "console":  # a session: commands after the prompt, the rest is what they printed
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            line = re.sub(r"(^|\s)#.*$", "", line).strip()  # shell comments
            if re.match(r"python3? -c ", line):  # Python code, not a qcompress command line
                continue
            for part in re.split(r"\|\||&&|\||;", line):
                words = part.split()
                if "qcompress" in words:
                    start = words.index("qcompress") + 1
                elif "-m" in words and words[words.index("-m") + 1:][:1] == ["qcompress"]:
                    start = words.index("-m") + 2
                else:
                    continue
                found.append(" ".join(words[start:]))
    return found


def parse(args: list[str]) -> None:
    """Parse `qcompress ARGS` the way the CLI would, without running the command."""
    group = typer.main.get_command(app)
    with group.make_context("qcompress", list(args), resilient_parsing=False) as ctx:
        protected = getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])  # click 8.2+ / older
        name, command, rest = group.resolve_command(ctx, [*protected, *ctx.args])
        command.make_context(name, rest, parent=ctx)


CASES = [(doc.name, line) for doc in DOCS for line in command_lines(doc.read_text())]


def test_the_docs_hold_commands():
    assert len(CASES) >= 10, CASES
    # every block is read, also those after a python block (whose closing fence once opened a false block)
    readme = [line for doc, line in CASES if doc == "README.md"]
    assert "recipe recipes/trec-dl.toml --profile offline" in readme and "evaluate --trec 2019" in readme


@pytest.mark.parametrize("doc,line", CASES, ids=[f"{d}: {c[:60]}" for d, c in CASES])
def test_documented_command_parses(doc, line):
    try:
        parse(shlex.split(line))
    except UsageError as err:  # unknown option, missing argument, bad value
        pytest.fail(f"{doc}: `qcompress {line}`: {err.format_message()}")


def test_a_wrong_option_is_caught():
    with pytest.raises(UsageError):
        parse(["compress", "in.jsonl", "--no-such-option"])
