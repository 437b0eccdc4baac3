"""Run the paper's experiments from recipe files, resumably, and aggregate them into tables and plots (issue 5).

    python -m qcompress.recipes recipes/variants.toml --profile offline            # run, then aggregate
    python -m qcompress.recipes recipes/*.toml --profile offline --dry-run          # list the runs only
    python -m qcompress.recipes recipes/peers.toml --profile offline --aggregate-only
    python -m qcompress.recipes recipes/variants.toml --profile paper --set encoder=/tmp/tiny-bert --set seeds=[42]

A recipe (recipes/*.toml) is plain TOML: `name`, `title`, `claim`, and one table per profile under `profiles`
(`paper`: the authors' set-up, for a GPU with internet; `offline`: the same experiment scaled to 2 CPU cores).
A profile holds:

    encoder, max_length, seeds      the encoder (hub id, folder, or "minilm"), its max length, the seeds
    encoder_layers                  transformer layers trained by the encoder-training variants (the paper: 4)
    train = {...}                   qcompress.training.TrainConfig fields (dataset, split, epochs, max_steps, ...)
    evaluate = [{name, dataset, split, protocol, top_k}]   the evaluation sets (protocol: full, judged, rerank)
    trec_dir                        the local TREC DL folder (else $QCOMPRESS_TREC_DIR)
    reference                       the row label every other row is tested against, a template over the row's
                                    parameters ("BEC", "BFEC d={dim}")
    runs = [{kind, ...}]            run entries; a list value expands into one run per element (a grid):
        kind = "train"    train a variant (variant, dim, train_fraction, any TrainConfig field), then evaluate
        kind = "encoder"  the untrained encoder alone: similarity "cosine" (float32) or "fidelity" (angles)
        kind = "peer"     a baseline of qcompress.recipes.peers on the untrained encoder's outputs (method, dim)
      with `storage` (a list: float32 / uint8 for angles, float32 / int8 for vectors: one table row each),
      `label` / `series` (templates naming the row and its plot series) and, for training runs, `seeds` (this
      entry's seeds instead of the profile's: more seeds where runs are cheap).
    plots = [{file, x, series?, xlabel, xlog, title, hlines?, ymin?}]   PNG plots of NDCG@10 against a row field
                                    (hlines: row labels drawn as reference lines; ymin: the y axis's start, 0
                                    by default; the error bars and each series' training budget are described
                                    on the plot from the runs)

`--set KEY=VALUE` overrides any profile value (VALUE in TOML syntax, else a string; dotted keys reach into
tables: --set train.max_steps=2). Training runs are seeded; encoder and peer runs are deterministic and run once.

Output (OUT defaults to runs/recipes):
    OUT/<recipe>/<profile>/results/<run id>.json   one per run: parameters, bytes per vector, head parameters,
                                                   metrics and per-query NDCG@10 for every evaluation set
    OUT/<recipe>/<profile>/results.md, *.png         the aggregate: mean +- std over seeds, paired tests
    OUT/<recipe>/<profile>/models/<run id>/          while a run trains (its checkpoint lets an interrupted run
                                                   resume); removed once the run's JSON is written
    OUT/cache/                                     pooled encoder outputs and mined negatives, shared by all runs
A run whose JSON exists is skipped, so an interrupted job continues where it stopped when started again.

Modules: config (recipe files, profiles, overrides, the expanded runs), runner (one result JSON per run: running,
resuming, reusing), report (tables, paired tests, plots), peers (the baselines), __main__ (the command line).
"""

from qcompress._lazy import attach

__all__ = ["load_recipe", "profile_config", "expand_runs", "run_recipe", "aggregate", "main", "RunSpec",
           # the old module's other public functions, at their old path
           "config_key", "run_one", "collect_rows", "significance", "table", "pairs_table", "plot", "update_doc",
           "export"]

# Imported on first use (qcompress._lazy). `main` lives in __main__.py: importing it eagerly would make
# `python -m qcompress.recipes` find that module already imported and warn (runpy).
__getattr__, __dir__ = attach(__name__, {
    "RunSpec": "config", "config_key": "config", "expand_runs": "config", "load_recipe": "config",
    "profile_config": "config",
    "aggregate": "report", "collect_rows": "report", "export": "report", "pairs_table": "report", "plot": "report",
    "significance": "report", "table": "report", "update_doc": "report",
    "run_one": "runner", "run_recipe": "runner",
    "main": "__main__",
})
