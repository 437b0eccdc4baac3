"""Training: any Hugging Face encoder with no head, the classical head or the quantum head (SPEC §4-5).

    config.py       TrainConfig (every argument, with the documentation `qcompress train` shows), the six
                    variants, the checks and defaults that make the run's recipe
    negatives.py    examples (query, positive, N hard negatives): the dataset's negatives or mined ones
    loop.py         train(): prepare the data, build the optimizer, run the epochs, write the model folder
    step.py         the loss of one batch (SPEC §5) and its gradients
    checkpoint.py   OUT.ckpt/step-<N>/: save, load, the latest; what a resume checks
    distributed.py  data-parallel training under torchrun (a no-op without it)
    plots.py        train_curve.png

Files (OUT is the output folder):
    OUT/                model folder (QCompressModel.save) + train_log.jsonl + train_curve.png, appears only when
                        training has finished (built in a temporary folder beside it, then renamed)
    OUT.ckpt/           while training: lock (held by the run: a second run writing OUT is refused),
                        step-<N>/ (the latest checkpoint: state.json, weights.safetensors,
                        optimizer.safetensors, rng.safetensors, best.safetensors) and the live train_log.jsonl;
                        removed after success. safetensors + JSON only: nothing is ever unpickled.
    CACHE/negatives/    mined negatives (JSON, with their digest), keyed by encoder weights, max length, dataset,
                        split, judgements, the texts, N
    CACHE/<encoder>/    pooled encoder outputs (qcompress.cache.PooledCache), shared with `qcompress evaluate`

`train`'s docstring has an example that trains and loads a model.
"""

from qcompress._lazy import attach

__all__ = [
    "VARIANTS",
    "TrainConfig",
    "TrainingInterrupted",
    "train",
    "resolve_variant",
    "default_dim",
    "mine_negatives",
    "build_examples",
    "Examples",
    "checkpoint_dir",
    "summary",
    "DEFAULT_HEAD_LR",
    "pooled_outputs",
    "ArgumentError",
    "OutputInTheWay",
]

# Imported on first use (qcompress._lazy): `qcompress train --help` reads TrainConfig without loading torch.
__getattr__, __dir__ = attach(__name__, {
    "OutputInTheWay": "checkpoint", "checkpoint_dir": "checkpoint",
    "DEFAULT_HEAD_LR": "config", "VARIANTS": "config", "ArgumentError": "config", "TrainConfig": "config",
    "default_dim": "config", "resolve_variant": "config",
    "TrainingInterrupted": "loop", "summary": "loop", "train": "loop",
    "Examples": "negatives", "build_examples": "negatives", "mine_negatives": "negatives",
    "pooled_outputs": "negatives",
})
