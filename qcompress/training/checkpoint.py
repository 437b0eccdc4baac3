"""Checkpoints of a run writing OUT: OUT.ckpt/step-<N>/, the latest only, safetensors + JSON (nothing is ever
unpickled).

    state.json              step, epoch, position in the epoch's order, log, best validation, the recipe, the
                            training data's digest (`data_digest`), and the optimizer's non-tensor state
    weights.safetensors     the trainable parameters
    optimizer.safetensors   the optimizer's tensors (Adam moments)
    rng.safetensors         the torch (and CUDA) random-number state: dropout continues where it stopped
    best.safetensors        the best validated weights so far, when validating

Under torchrun, ranks other than 0 keep their random-number state beside it (qcompress.training.distributed).

A run holds OUT.ckpt/lock for its whole life (`output_lock`, qcompress.atomic.lock_folder): a second run writing
the same OUT is refused at once, whatever its flags.

What a run may replace (`check_output`): a qcompress model folder at OUT (with overwrite), and OUT.ckpt when it
holds nothing but a run's own files: its checkpoint with overwrite, or, when the run was killed before its first
checkpoint, without any flag (there is nothing to lose). Any other folder is refused, whatever the flags.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from qcompress.atomic import atomic_dir, lock_folder
from qcompress.errors import InputError
from qcompress.model import CONFIG_NAME
from qcompress.training.config import RESUMABLE_CHANGES, ArgumentError, TrainConfig

__all__ = ["OutputInTheWay", "checkpoint_dir", "output_lock", "clear_checkpoints", "check_output", "is_checkpoint_folder", "checkpoint_step",
           "latest_checkpoint", "check_same_recipe", "data_digest", "check_same_data", "trainable_state", "rng_state", "set_rng_state",
           "save_checkpoint", "load_checkpoint"]

# What a run writes under OUT.ckpt/ (qcompress.atomic writes under ".NAME.<random>.tmp" first, and renames the
# replaced folder ".NAME.old").
_RUN_FILE = re.compile(r"lock|step-\d+|train_log\.jsonl|rng-rank\d+\.safetensors|\.(step-\d+|train_log\.jsonl|"
                       r"rng-rank\d+\.safetensors)\.(\w+\.tmp|old)")


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


@contextlib.contextmanager
def output_lock(output: str | os.PathLike, main: bool = True) -> Iterator[None]:
    """Hold OUT.ckpt/lock for the block (the main process only, under torchrun): a second run writing `output`
    raises `InputError` at once. On the way out, a checkpoint folder holding nothing but the lock (a run refused or
    failed before writing anything there) is removed."""
    if not main:
        yield
        return
    root = checkpoint_dir(output)
    fd = lock_folder(root, output, what="model")
    try:
        yield
    finally:
        try:
            if [entry.name for entry in root.iterdir()] == ["lock"]:
                (root / "lock").unlink()
                root.rmdir()
        except OSError:
            pass  # gone already (the run finished), or something else appeared in it: left as it is
        os.close(fd)


def clear_checkpoints(root: Path) -> None:
    """Delete everything in a run's checkpoint folder but its lock (a run starting over)."""
    for entry in root.iterdir() if root.is_dir() else []:
        if entry.name != "lock":
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def check_output(cfg: TrainConfig) -> None:
    """Refuse to replace anything but a qcompress model folder (with overwrite) or an interrupted run's checkpoint
    (with overwrite or resume); a checkpoint folder without a complete checkpoint (the run was killed before its
    first) holds nothing to lose: the run starts over."""
    out, ckpt = Path(cfg.output), checkpoint_dir(cfg.output)
    if out.exists() and not out.is_dir():
        raise ArgumentError("{output} {path} is a file; give a folder path", path=out)
    if out.is_dir() and any(out.iterdir()):
        if not (out / CONFIG_NAME).is_file():
            raise OutputInTheWay("{output} {path} is not empty and is not a qcompress model folder (no "
                                 f"{CONFIG_NAME}); it is never replaced: choose another {{output}}", path=out)
        if not cfg.overwrite:
            raise OutputInTheWay("{output} {path} holds a model; pass {overwrite} to replace it", path=out)
    if ckpt.exists() and not is_checkpoint_folder(ckpt):
        raise OutputInTheWay("{path} is where this run keeps its checkpoints, and it holds other files; it is "
                             "never replaced: move it, or choose another {output}", path=ckpt)
    latest = latest_checkpoint(ckpt)
    if cfg.resume and latest is None:
        started = ckpt.is_dir() and any(entry.name != "lock" for entry in ckpt.iterdir())
        why = "the run stopped before its first" if started else "no run has written there"
        raise ArgumentError("{resume}: no checkpoint in {path} to continue from ({why}); run without {resume} to "
                            "start over", path=ckpt, why=why)
    if not cfg.resume and latest is not None and not cfg.overwrite:
        raise OutputInTheWay("{path} holds the checkpoint of step {step} of an interrupted run: pass {resume} to "
                             "continue it, or {overwrite} to start over", path=ckpt, step=checkpoint_step(latest))


def is_checkpoint_folder(root: Path) -> bool:
    """Whether `root` is a folder holding only what a training run writes there (checkpoints, the live log, other
    ranks' random-number states, and the temporary names of files being written): safe to replace."""
    if not root.is_dir():
        return False
    return all(_RUN_FILE.fullmatch(entry.name) for entry in root.iterdir())


def checkpoint_step(folder: Path) -> int:
    """The step of a step-<N> checkpoint folder.

    Example:
        >>> checkpoint_step(Path("m.ckpt/step-000000012"))
        12
    """
    return int(folder.name.split("-")[1])


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


def data_digest(**parts: Iterable | Mapping) -> dict[str, dict]:
    """{part: {"count": rows, "digest": hex}} of the data a run trains on, part by part (documents, queries,
    judgements: iterables of JSON-able rows, in order). A Mapping that is not a dict (a corpus read lazily from
    ir_datasets, which checks its own files against their checksums) is counted, not read.

    Example:
        >>> data_digest(documents=[("d1", "a wing"), ("d2", "heat")])["documents"]["count"]
        2
        >>> data_digest(a=[("d1", "x")]) == data_digest(a=[("d1", "y")])
        False
    """
    digests = {}
    for name, rows in parts.items():
        if isinstance(rows, Mapping) and not isinstance(rows, dict):
            digests[name] = {"count": len(rows), "digest": None}
            continue
        h, count = hashlib.blake2b(digest_size=16), 0
        for row in rows:
            # surrogatepass: a lone surrogate in a text hashes instead of failing
            h.update(json.dumps(row, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n")
            count += 1
        digests[name] = {"count": count, "digest": h.hexdigest()}
    return digests


def check_same_data(folder: Path, data: dict[str, dict], source: str) -> None:
    """A resume must continue on the data the interrupted run trained on (`data_digest`, from `source`: a file,
    folder or dataset name). A checkpoint of an older qcompress, which recorded none, is not checked."""
    saved = json.loads((folder / "state.json").read_text()).get("data")
    if saved is None:
        return
    changed = sorted(part for part in set(saved) | set(data) if saved.get(part) != data.get(part))
    if changed:
        def rows(part: dict | None) -> str:
            return "none" if part is None else f"{part['count']:,} rows, digest {str(part['digest'])[:12]}"

        detail = "; ".join(f"{part}: {rows(saved.get(part))} -> {rows(data.get(part))}" for part in changed)
        raise ArgumentError("{resume}: the training data in {source} differs from the interrupted run's ({detail}); "
                            "restore it, or pass {overwrite} to start over on the new data", source=source,
                            detail=detail)


def trainable_state(model) -> dict[str, Tensor]:
    """A CPU copy of the parameters that train."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict[str, Tensor]:
    """The torch random-number state (CPU, and every CUDA device's): what dropout draws from."""
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"cuda{i}"] = s
    return rng


def set_rng_state(rng: dict[str, Tensor]) -> None:
    """Restore a state from `rng_state`."""
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available():
        devices = sorted((k for k in rng if k.startswith("cuda")), key=lambda k: int(k[4:]))
        torch.cuda.set_rng_state_all([rng[k] for k in devices])


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
    rng = rng_state()
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
        raise InputError(f"{folder}: the checkpoint's trainable parameters do not match this model; "
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
    set_rng_state(load_file(str(folder / "rng.safetensors")))
    best_path = folder / "best.safetensors"
    return state, (load_file(str(best_path)) if best_path.is_file() else None)
