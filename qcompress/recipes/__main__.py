"""Run the paper's experiments from recipe files, resumably, and aggregate them into tables and plots (issue 5).

The command line of qcompress.recipes (its package docstring describes recipes and outputs):

    python -m qcompress.recipes recipes/variants.toml --profile offline            # run, then aggregate
    python -m qcompress.recipes recipes/*.toml --profile offline --dry-run          # list the runs only
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from qcompress.recipes.config import expand_runs, load_recipe, profile_config
from qcompress.recipes.report import aggregate, export, update_doc
from qcompress.recipes.runner import current_result, run_recipe

__all__ = ["main", "DEFAULT_OUT"]

DEFAULT_OUT = "runs/recipes"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m qcompress.recipes", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="+", help="recipe files (recipes/*.toml)")
    parser.add_argument("--profile", default="offline", help="paper or offline (default offline)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a profile value (TOML syntax; dotted keys: train.max_steps=2)")
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="run only the runs whose id contains TEXT (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and whether they are done")
    parser.add_argument("--aggregate-only", action="store_true", help="only rebuild tables and plots")
    parser.add_argument("--keep-models", action="store_true", help="keep trained model folders")
    parser.add_argument("--update-doc", metavar="FILE", help="replace the table between the markers "
                        "<!-- table: RECIPE/PROFILE --> and <!-- /table --> in FILE (e.g. docs/results.md) with the "
                        "freshly aggregated one")
    parser.add_argument("--export", metavar="DIR", help="also write every finished run's JSON, one per line, to "
                        "DIR/<recipe>-<profile>.jsonl (small enough to commit beside the tables built from it)")
    parser.add_argument("--allow-dirty", action="store_true", help="aggregate runs computed from a working tree "
                        "with uncommitted changes (refused by default: no commit holds the code that made them)")
    return parser


def _log(message: str) -> None:
    print(time.strftime("%H:%M:%S"), message, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out_root = Path(args.out)
    if args.profile == "offline":  # the offline profiles never reach for the network
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for path in args.recipes:
        recipe = load_recipe(path)
        cfg = profile_config(recipe, args.profile, args.overrides)
        command = " ".join(["python -m qcompress.recipes", path, "--profile", args.profile] +
                           [f"--set {o}" for o in args.overrides])
        if args.dry_run:
            out = out_root / recipe["name"] / args.profile
            for spec in expand_runs(cfg):
                done = current_result(out / "results" / f"{spec.id}.json", spec, cfg) is not None
                print(f"{recipe['name']}/{args.profile}\t{'done' if done else 'todo'}\t{spec.id}")
            continue
        if not args.aggregate_only:
            run_recipe(recipe, args.profile, cfg, out_root, only=args.only, keep_models=args.keep_models, log=_log)
        written = aggregate(recipe, args.profile, cfg, out_root, command=command, allow_dirty=args.allow_dirty)
        if args.export:
            export(recipe, args.profile, cfg, out_root, Path(args.export))
        if args.update_doc and written is not None:
            update_doc(Path(args.update_doc), f"{recipe['name']}/{args.profile}", written)
        print(f"{recipe['name']}/{args.profile}: {written or 'no results yet'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
