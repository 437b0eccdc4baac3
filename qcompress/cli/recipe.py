"""`qcompress recipe`: run the paper's experiments from recipe files, resumably, then aggregate them
(qcompress.recipes).

`python -m qcompress.recipes ARGS` runs this same command (qcompress/recipes/__main__.py).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from qcompress.cli._common import command
from qcompress.cli.options import Device

DEFAULT_OUT = "runs/recipes"

Recipes = Annotated[List[Path], typer.Argument(
    metavar="RECIPE", show_default=False, help="Recipe files (recipes/*.toml), run one after the other.")]
Profile = Annotated[str, typer.Option(
    "--profile", help="The recipe's profile: paper (the authors' set-up: a GPU, internet) or offline (2 CPU cores, "
    "the offline MiniLM, bundled and local data), or another one the recipe defines.")]
Out = Annotated[Path, typer.Option("--out", help="Output folder: `OUT/<recipe>/<profile>/` (results, tables, plots).")]
Overrides = Annotated[Optional[List[str]], typer.Option(
    "--set", metavar="KEY=VALUE", show_default=False,
    help="Override a profile value (VALUE in TOML syntax, else a string; dotted keys reach into tables: "
    "--set train.max_steps=2); repeatable.")]
Only = Annotated[Optional[List[str]], typer.Option(
    "--only", metavar="TEXT", show_default=False, help="Run only the runs whose id contains TEXT; repeatable.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="List the runs and whether each is done; run nothing.")]
AggregateOnly = Annotated[bool, typer.Option("--aggregate-only", help="Only rebuild the tables and plots.")]
KeepModels = Annotated[bool, typer.Option(
    "--keep-models", help="Keep the trained model folders (`OUT/<recipe>/<profile>/models/`).")]
UpdateDoc = Annotated[Optional[Path], typer.Option(
    "--update-doc", metavar="FILE",
    help="Replace the table between the markers `<!-- table: RECIPE/PROFILE -->` and `<!-- /table -->` in FILE "
    "(e.g. docs/results.md) with the freshly aggregated one; a bench profile's plot is copied beside FILE.")]
Export = Annotated[Optional[Path], typer.Option(
    "--export", metavar="DIR",
    help="Also write every finished run's JSON, one per line, to `DIR/<recipe>-<profile>.jsonl` (small enough to "
    "commit beside the tables built from it).")]
AllowDirty = Annotated[bool, typer.Option(
    "--allow-dirty", help="Aggregate runs computed from a working tree with uncommitted changes (refused by "
    "default: no commit holds the code that made them).")]


def _log(message: str) -> None:
    print(time.strftime("%H:%M:%S"), message, flush=True)


@command("recipe")
def recipe_command(
    recipes: Recipes,
    profile: Profile = "offline",
    out: Out = Path(DEFAULT_OUT),
    overrides: Overrides = None,
    only: Only = None,
    dry_run: DryRun = False,
    aggregate_only: AggregateOnly = False,
    keep_models: KeepModels = False,
    update_doc: UpdateDoc = None,
    export: Export = None,
    allow_dirty: AllowDirty = False,
    device: Device = None,
) -> None:
    """Run the paper's experiments from recipe files (recipes/*.toml), resumably, and aggregate them into tables
    and plots.

    A run whose result JSON exists is skipped, so an interrupted job continues where it stopped when started
    again; the aggregate (`results.md`, PNG plots: mean +- std over seeds, paired tests) is rebuilt after every
    recipe. The recipe format and the output layout are described in `qcompress/recipes/__init__.py`.

    Examples:

        qcompress recipe recipes/variants.toml --profile offline
        qcompress recipe recipes/sizes.toml recipes/peers.toml --dry-run
        qcompress recipe recipes/variants.toml --profile paper --set train.max_steps=2 --only QBEC
    """
    from qcompress.recipes.bench_profile import export_bench, is_bench, run_bench_profile
    from qcompress.recipes.config import expand_runs, load_recipe, profile_config
    from qcompress.recipes.report import aggregate, export as export_runs, update_doc as replace_table
    from qcompress.recipes.runner import current_result, run_recipe

    overrides = overrides or []
    if profile == "offline":  # the offline profiles never reach for the network
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for path in recipes:
        recipe = load_recipe(path)
        cfg = profile_config(recipe, profile, overrides)
        if device is not None:  # where models run; not part of a run's identity (config_key)
            cfg["device"] = device
        rerun = " ".join(["qcompress recipe", str(path), "--profile", profile] + [f"--set {o}" for o in overrides])
        if is_bench(cfg):
            if dry_run:
                done = len(list((out / recipe["name"] / profile / "results").glob("*.json")))
                print(f"{recipe['name']}/{profile}\tbench\t{done} run(s) finished")
                continue
            written = run_bench_profile(recipe, profile, cfg, out, run=not aggregate_only, allow_dirty=allow_dirty,
                                        command=rerun, log=_log)
            if export is not None:
                export_bench(recipe, profile, out, export)
            if update_doc is not None:
                replace_table(update_doc, f"{recipe['name']}/{profile}", written)
                plot = cfg["bench"].get("plot")
                if plot and (written.parent / plot).is_file():  # the doc shows the plot beside the table
                    shutil.copyfile(written.parent / plot, update_doc.parent / plot)
            print(f"{recipe['name']}/{profile}: {written}", flush=True)
            continue
        if dry_run:
            folder = out / recipe["name"] / profile
            for spec in expand_runs(cfg):
                done = current_result(folder / "results" / f"{spec.id}.json", spec, cfg) is not None
                print(f"{recipe['name']}/{profile}\t{'done' if done else 'todo'}\t{spec.id}")
            continue
        if not aggregate_only:
            run_recipe(recipe, profile, cfg, out, only=only or [], keep_models=keep_models, log=_log)
        written = aggregate(recipe, profile, cfg, out, command=rerun, allow_dirty=allow_dirty)
        if export is not None:
            export_runs(recipe, profile, cfg, out, export)
        if update_doc is not None and written is not None:
            replace_table(update_doc, f"{recipe['name']}/{profile}", written)
        print(f"{recipe['name']}/{profile}: {written or 'no results yet'}", flush=True)
