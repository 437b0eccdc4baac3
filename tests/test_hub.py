"""Models and encoders by Hugging Face Hub id (with a revision), offline from a pre-populated Hub cache; what a model
folder records about its encoder; the model card.

The caches here have the Hub's layout (models--ORG--NAME/snapshots/COMMIT/..., refs/main), and models are found
through huggingface_hub's snapshot_download with HF_HUB_OFFLINE=1 (tests/conftest.py): the code path a user's
`--model org/name` takes, minus the network.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants

from qcompress import load_model
from qcompress.data import Collection
from qcompress.errors import InputError
from qcompress.model import build_model
from qcompress.training import train

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TINY = Collection("tiny", corpus={"d1": "the flow on a wing", "d2": "heat transfer", "d3": "pressure of the flow",
                                  "d4": "a wing"},
                  queries={"q1": "wing flow", "q2": "heat"}, qrels={"q1": {"d1": 1}, "q2": {"d2": 1}}, split="train")


def hub_cache(root: Path, repo: str, folder: Path, commit: str = COMMIT) -> Path:
    """Put `folder` into a Hugging Face cache at `root` as the main branch of model `repo`."""
    storage = root / ("models--" + repo.replace("/", "--"))
    shutil.copytree(folder, storage / "snapshots" / commit)
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / "main").write_text(commit)
    return root


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache that this process uses (the HF_HUB_CACHE a user would set)."""
    root = tmp_path / "hf-cache"
    root.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    return root


@pytest.fixture(scope="module")
def model_folder(tiny_encoder, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("qmodel") / "qmodel"
    build_model(tiny_encoder, head="quantum", dim=8, max_length=64, device="cpu").save(folder)
    return folder


def test_load_model_by_hub_id_and_revision_from_the_cache(model_folder, cache_dir):
    hub_cache(cache_dir, "org/qmodel", model_folder)
    texts = ["what is a wing", "heat"]
    expected = load_model(model_folder, device="cpu").encode(texts, convert_to_tensor=True)
    for revision in (None, "main", COMMIT):
        loaded = load_model("org/qmodel", revision=revision, device="cpu")
        torch.testing.assert_close(loaded.encode(texts, convert_to_tensor=True), expected)
    with pytest.raises(InputError, match=r"org/qmodel: .*revision 'v2' is not in the Hugging Face cache"):
        load_model("org/qmodel", revision="v2")
    with pytest.raises(InputError, match="org/other: no such folder"):
        load_model("org/other")
    with pytest.raises(InputError, match="revision applies to a Hub id"):
        load_model(model_folder, revision="main")
    # ... and sentence-transformers finds the same model there
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer("org/qmodel", revision=COMMIT, trust_remote_code=True, device="cpu")
    torch.testing.assert_close(st.encode(texts, convert_to_tensor=True), expected, atol=1e-5, rtol=0)


def test_cli_model_by_hub_id_with_revision_in_a_fresh_process(model_folder, tmp_path):
    """The real environment: HF_HUB_CACHE and HF_HUB_OFFLINE read by a new `qcompress` process."""
    cache = hub_cache(tmp_path / "hf", "org/qmodel", model_folder)
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    pairs = "what is a wing\tthe flow on a wing\nheat\tpressure of the flow\n"

    def score(*model_args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "qcompress", "score", "--pairs", "-", *model_args], input=pairs,
                              env=env, capture_output=True, text=True, timeout=300)

    by_id = score("--model", "org/qmodel", "--revision", COMMIT)
    assert by_id.returncode == 0, by_id.stderr
    local = score("--model", str(model_folder))
    assert by_id.stdout == local.stdout and len(by_id.stdout.splitlines()) == 2
    missing = score("--model", "org/qmodel", "--revision", "v9")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines() == [
        "qcompress: error: org/qmodel: no such folder, and the Hub model at revision 'v9' is not in the Hugging "
        "Face cache, which is all that can be used offline (HF_HUB_OFFLINE=1, or no connection)"]


def test_a_frozen_hub_encoder_is_stored_in_the_folder_and_recorded_by_id_and_revision(tiny_encoder, cache_dir,
                                                                                     tmp_path):
    hub_cache(cache_dir, "org/tiny-bert", Path(tiny_encoder))
    folder = train({"variant": "QBFEC", "encoder": "org/tiny-bert", "dim": 8, "output": str(tmp_path / "m"),
                    "negatives": 2, "batch_size": 2, "max_steps": 1, "max_length": 64, "cache_dir": str(tmp_path / "c"),
                    "device": "cpu"}, collection=TINY)
    saved = json.loads((folder / "qcompress.json").read_text())
    assert (saved["encoder"], saved["base_model"], saved["base_model_revision"]) == ("encoder", "org/tiny-bert", COMMIT)
    card = (folder / "README.md").read_text()
    assert "\nbase_model: org/tiny-bert\n" in card and COMMIT in card
    expected = load_model(folder, device="cpu").encode(["a wing"], convert_to_tensor=True)
    shutil.rmtree(cache_dir / "models--org--tiny-bert")  # the folder does not need the Hub any more
    torch.testing.assert_close(load_model(folder, device="cpu").encode(["a wing"], convert_to_tensor=True), expected)


def test_a_frozen_local_encoder_is_copied_into_the_model_folder(tiny_encoder, tmp_path):
    encoder = Path(shutil.copytree(tiny_encoder, tmp_path / "my-encoder"))
    folder = train({"variant": "QBFEC", "encoder": str(encoder), "dim": 8, "output": str(tmp_path / "m"),
                    "negatives": 2, "batch_size": 2, "max_steps": 1, "max_length": 64, "cache_dir": str(tmp_path / "c"),
                    "device": "cpu"}, collection=TINY)
    saved = json.loads((folder / "qcompress.json").read_text())
    assert saved["encoder"] == "encoder" and saved["encoder_trained"] is False and saved["base_model"] is None
    expected = load_model(folder, device="cpu").encode(["a wing"], convert_to_tensor=True)
    shutil.rmtree(encoder)
    torch.testing.assert_close(load_model(folder, device="cpu").encode(["a wing"], convert_to_tensor=True), expected)


def test_model_card_has_the_hub_header_training_setup_and_evaluation(tiny_encoder, tmp_path):
    folder = train({"variant": "QBFEC", "encoder": tiny_encoder, "dim": 8, "output": str(tmp_path / "qbfec"),
                    "negatives": 2, "batch_size": 2, "epochs": 1, "max_length": 64, "eval_split": "train",
                    "cache_dir": str(tmp_path / "c"), "device": "cpu"}, collection=TINY, eval_collection=TINY)
    card = (folder / "README.md").read_text()
    header = card.split("---\n")[1]
    for line in ("library_name: sentence-transformers", "pipeline_tag: sentence-similarity", "license: unknown",
                 "- qcompress", "- sentence-transformers"):
        assert line in header.splitlines()
    assert "base_model:" not in header  # a local encoder of unknown origin: no Hub id to name
    result = json.loads((folder / "qcompress.json").read_text())["training_result"]
    assert "| variant | QBFEC |" in card and f"| steps | {result['steps']} |" in card
    assert "## Evaluation" in card and f"NDCG@10 on `tiny` split `train` (protocol `{result['validation_protocol']}`)" \
        in card
    assert f"| this model (epoch {result['best_epoch']}) | {result['best_ndcg_cut_10']:.4f} |" in card
    assert 'SentenceTransformer("your-name/qbfec", trust_remote_code=True)' in card  # a Hub id, not the folder


def test_model_card_names_a_known_base_model_and_its_license(minilm_path, tmp_path):
    build_model("minilm", head="linear", dim=16, device="cpu").save(tmp_path / "bfec")
    header = (tmp_path / "bfec" / "README.md").read_text().split("---\n")[1].splitlines()
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in header and "license: apache-2.0" in header


def readme_python(section: str) -> str:
    """The python code block of a README section."""
    text = (ROOT / "README.md").read_text().split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return text.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_snippets_run(model_folder, cache_dir, tmp_path, monkeypatch, capsys):
    """"Use with sentence-transformers" and "Share on the Hub", as written, on a model folder and a Hub cache."""
    (tmp_path / "models").mkdir()
    shutil.copytree(model_folder, tmp_path / "models" / "qbfec")
    hub_cache(cache_dir, "your-name/qbfec-minilm", model_folder)
    monkeypatch.chdir(tmp_path)
    exec(readme_python("Use with sentence-transformers"), {})
    scores = capsys.readouterr().out
    assert scores.startswith("tensor([[") and "]])" in scores
    namespace = {}
    exec(readme_python("Share on the Hub"), namespace)
    torch.testing.assert_close(namespace["model"].encode(["a wing"], convert_to_tensor=True),
                               load_model(model_folder).encode(["a wing"], convert_to_tensor=True))
