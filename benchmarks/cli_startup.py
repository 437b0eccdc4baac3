"""How long `qcompress --help` and `qcompress COMMAND --help` take, against a bare `python -c "import typer"`.

    python benchmarks/cli_startup.py                  # 7 rounds
    python benchmarks/cli_startup.py --repeats 15
    python benchmarks/cli_startup.py --other ../main  # also another checkout's --help and train --help

Each round starts every command once as a fresh process (the baseline first, then the others, in the same order),
so a busy machine slows all of them alike; the median over rounds is printed with its ratio to the baseline's.
A two-command Typer app's `cmd --help` shows how much of a command's --help is Typer's own (it builds pydantic
adapters for every command and renders the help with rich), which no lazy import on our side removes.
Goal: every --help under a second, which needs the command line to import no torch, transformers, pyarrow or scipy
(tests/test_cli_usage.py checks the imports themselves).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

# A minimal Typer app rendered as qcompress's commands are (rich, markdown docstrings), for the share Typer takes.
TINY_APP = """
from typing import Optional
import typer
app = typer.Typer(rich_markup_mode="markdown")
@app.command("cmd")
def cmd(path: str, size: int = typer.Option(1, min=1, help="A size."), name: Optional[str] = None) -> None:
    \"\"\"Do something.\"\"\"
@app.command("other")
def other() -> None:
    \"\"\"Do nothing.\"\"\"
app()
"""


def wall_time(args: list[str], where: str | None = None) -> float:
    """Seconds to run `args` to its end; `where`: a checkout to run it from (python -m finds the package of the
    current folder first)."""
    env = None if where is None else dict(os.environ, PYTHONPATH=where)
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=where)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--other", metavar="DIR", help="another checkout (e.g. ../main): time its --help and "
                        "train --help too, in the same rounds")
    args = parser.parse_args()
    runs = {"python -c 'import typer'": [sys.executable, "-c", "import typer"],
            # Typer's own share of a command's --help: building the command (its pydantic adapters) and rendering
            "a two-command Typer app: cmd --help": [sys.executable, "-c", TINY_APP, "cmd", "--help"],
            "qcompress --help": [sys.executable, "-m", "qcompress", "--help"]}
    from qcompress.cli import command_paths  # light: typer and rich (the timed runs are fresh processes)

    runs.update({f"qcompress {' '.join(c)} --help": [sys.executable, "-m", "qcompress", *c, "--help"]
                 for c in command_paths()})
    where = {name: None for name in runs}
    if args.other:
        for extra in ([], ["train"]):
            name = f"{args.other}: qcompress {' '.join(extra + ['--help'])}"
            runs[name] = [sys.executable, "-m", "qcompress", *extra, "--help"]
            where[name] = os.path.abspath(args.other)
    for name, argv in runs.items():  # warm the file cache
        wall_time(argv, where[name])
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, argv in runs.items():
            times[name].append(wall_time(argv, where[name]))
    baseline = statistics.median(times["python -c 'import typer'"])
    print(f"median of {args.repeats} rounds, each a fresh process ({sys.executable})")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:40s} {median:6.3f} s  {median / baseline:6.2f}x the baseline")


if __name__ == "__main__":
    main()
