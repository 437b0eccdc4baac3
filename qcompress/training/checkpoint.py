"""Checkpoints of a run writing OUT: OUT.ckpt/step-<N>/, the latest only, safetensors + JSON (nothing is ever
unpickled).

    state.json              step, epoch, position in the epoch's order, log, best validation, the recipe, and the
                            optimizer's non-tensor state
    weights.safetensors     the trainable parameters
    optimizer.safetensors   the optimizer's tensors (Adam moments)
    rng.safetensors         the torch (and CUDA) random-number state: dropout continues where it stopped
    best.safetensors        the best validated weights so far, when validating

Under torchrun, ranks other than 0 keep their random-number state beside it (qcompress.training.distributed).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from qcompress.atomic import atomic_dir
from qcompress.training.config import RESUMABLE_CHANGES, ArgumentError, TrainConfig

__all__ = ["OutputInTheWay", "checkpoint_dir", "check_output", "latest_checkpoint", "check_same_recipe",
           "trainable_state", "save_checkpoint", "load_checkpoint"]


class OutputInTheWay(ArgumentError, FileExistsError):
    """A model folder or an interrupted run's checkpoint is where the run would write."""


def checkpoint_dir(output: str | os.PathLike) -> Path:
    """Where the checkpoints of a run writing `output` live: beside it, `OUT.ckpt`.

    Example:
        >>> checkpoint_dir("models/qbfec").as_posix()
        'models/qbfec.ckpt'
    """
    output = Path(output)
    return output.with_name(output.name + ".ckpt")


def check_output(cfg: TrainConfig) -> None:
    """Refuse to replace a model folder or an interrupted run's checkpoint unless asked to (overwrite, resume)."""
    out, ckpt = Path(cfg.output), checkpoint_dir(cfg.output)
    if out.exists() and not out.is_dir():
        raise ArgumentError("{output} {path} is a file; give a folder path", path=out)
    if out.is_dir() and any(out.iterdir()) and not cfg.overwrite:
        raise OutputInTheWay("{output} {path} exists and is not empty; pass {overwrite} to replace it", path=out)
    if cfg.resume and latest_checkpoint(ckpt) is None:
        raise ArgumentError("{resume}: no checkpoint in {path} to continue from; run without {resume}", path=ckpt)
    if not cfg.resume and ckpt.exists() and not cfg.overwrite:
        raise OutputInTheWay("{path} holds the checkpoint of an interrupted run: pass {resume} to continue it, or "
                             "{overwrite} to start over", path=ckpt)


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete step-<N>/ folder under `root`, or None."""
    done = sorted(p for p in root.glob("step-*") if (p / "state.json").is_file()) if root.is_dir() else []
    return done[-1] if done else None


def check_same_recipe(folder: Path, recipe: dict) -> None:
    """A resume must continue the same run: only RESUMABLE_CHANGES may differ from the checkpoint's recipe."""
    saved = json.loads((folder / "state.json").read_text())["recipe"]
    changed = sorted(k for k in set(saved) | set(recipe)
                     if k not in RESUMABLE_CHANGES and saved.get(k) != recipe.get(k))
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {recipe.get(k)!r}" for k in changed)
        raise ArgumentError("{resume} needs the arguments of the interrupted run; these differ: {detail}",
                            detail=detail)


def trainable_state(model) -> dict[str, Tensor]:
    """A CPU copy of the parameters that train."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def _rng_state() -> dict[str, Tensor]:
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"cuda{i}"] = s
    return rng


def _set_rng_state(rng: dict[str, Tensor]) -> None:
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available():
        torch.cuda.set_rng_state_all([rng[k] for k in sorted(k for k in rng if k.startswith("cuda"))])


def save_checkpoint(root: Path, model, optimizer, state: dict, best: dict[str, Tensor] | None) -> Path:
    """Write step-<N>/ atomically, then delete older checkpoints. Tensors as safetensors, the rest as JSON."""
    folder = root / f"step-{state['step']:09d}"
    opt = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in opt["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    rng = _rng_state()
    root.mkdir(parents=True, exist_ok=True)
    with atomic_dir(folder, overwrite=True) as tmp:
        save_file({k: v.contiguous() for k, v in trainable_state(model).items()}, str(tmp / "weights.safetensors"))
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        save_file(rng, str(tmp / "rng.safetensors"))
        if best is not None:
            save_file({k: v.contiguous() for k, v in best.items()}, str(tmp / "best.safetensors"))
        meta = dict(state, optimizer_groups=opt["param_groups"], optimizer_scalars=scalars)
        (tmp / "state.json").write_text(json.dumps(meta, indent=1) + "\n")
    for old in root.glob("step-*"):
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def load_checkpoint(folder: Path, model, optimizer) -> tuple[dict, dict[str, Tensor] | None]:
    """Restore weights, optimizer and RNG state from `folder`; return (state, best weights or None)."""
    state = json.loads((folder / "state.json").read_text())
    weights = load_file(str(folder / "weights.safetensors"))
    params = dict(model.named_parameters())
    if set(weights) != {n for n, p in params.items() if p.requires_grad}:
        raise ValueError(f"{folder}: the checkpoint's trainable parameters do not match this model; "
                         "resume with the arguments of the interrupted run")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    opt_state: dict[int, dict] = {}
    for key, value in load_file(str(folder / "optimizer.safetensors")).items():
        index, name = key.split(".", 1)
        opt_state.setdefault(int(index), {})[name] = value
    for key, value in state.pop("optimizer_scalars").items():
        index, name = key.split(".", 1)
        opt_state.setdefault(int(index), {})[name] = value
    groups = state.pop("optimizer_groups")
    for group in groups:
        group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    _set_rng_state(load_file(str(folder / "rng.safetensors")))
    best_path = folder / "best.safetensors"
    return state, (load_file(str(best_path)) if best_path.is_file() else None)
