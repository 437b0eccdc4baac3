"""Models people can share (issue 28): the PyPI name, the default model as a complete sentence-transformers folder,
folders that `SentenceTransformer.save` writes, `qcompress push` (never reaching the Hub: HfApi's methods are
replaced, or the endpoint is a closed local port), and the model cards.
"""

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import qcompress
from qcompress import default_folder, load_model
from qcompress._version import DISTRIBUTION, __version__
from qcompress.cli import app
from qcompress.errors import InputError
from qcompress.formats import read_embeddings
from qcompress.model import DEFAULT_MODEL_DIR, ModelConfig, build_model
from qcompress.model_card import CARD_MARKER, model_card
from test_hub import hub_cache, model_folder  # noqa: F401 (a fixture)
from test_model import one_line_error

SentenceTransformer = pytest.importorskip("sentence_transformers").SentenceTransformer

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
TEXTS = ["a text", "what is the boundary layer of a wing", "heat transfer", "the flow on a wing at high speed"]


# -- the distribution name ----------------------------------------------------------------------------------------


def test_the_distribution_is_qcompress_embeddings_everywhere_the_package_is_installed_by_name():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["name"] == DISTRIBUTION == "qcompress-embeddings"
    assert project["project"]["dynamic"] == ["version"]  # one version: qcompress/_version.py
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "qcompress._version.__version__"}
    # No install line or error message names the unrelated PyPI package `qcompress`.
    wrong = re.compile(r"pip install (-U )?['\"]?qcompress(?![-\w])|['\"]qcompress\[|\"qcompress\": \{\"specifier")
    files = [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("qcompress/**/*.py"), *ROOT.glob("recipes/*")]
    offenders = [str(f.relative_to(ROOT)) for f in files if f.is_file() and wrong.search(f.read_text(errors="ignore"))]
    assert offenders == []
    assert f"pip install {DISTRIBUTION}" in (ROOT / "README.md").read_text()


# -- the default model as a complete sentence-transformers folder --------------------------------------------------


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def test_the_default_folder_loads_in_sentence_transformers_with_exactly_the_angles_of_compress(minilm_path, cache,
                                                                                               tmp_path):
    folder = default_folder.default_model_folder(cache)
    assert folder.parent == cache / "models" and (folder / "encoder" / "model.safetensors").is_file()
    assert not [p for p in folder.rglob("*") if p.is_symlink()]  # copies: nothing links out of the folder
    assert load_file(str(folder / "encoder" / "model.safetensors")).keys() == \
        load_file(str(Path(minilm_path) / "model.safetensors")).keys()
    st = SentenceTransformer(folder, trust_remote_code=True, device="cpu")
    angles = st.encode(TEXTS, convert_to_tensor=True)
    assert angles.shape == (len(TEXTS), 128) and st.similarity_fn_name == "log_fidelity"

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    result = runner.invoke(app, ["compress", str(docs), "-o", str(tmp_path / "d.parquet"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    stored = read_embeddings(tmp_path / "d.parquet")
    assert stored.ids == [f"d{i}" for i in range(len(TEXTS))]
    assert torch.equal(angles, stored.values)  # bit for bit
    # qcompress reads the folder too, as the same model as the shipped one
    assert load_model(folder, device="cpu").config.to_dict() == {
        **load_model(DEFAULT_MODEL_DIR, device="cpu").config.to_dict(), "encoder": "encoder",
        "encoder_revision": None}
    card = (folder / "README.md").read_text()
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in card and "license: apache-2.0" in card


def test_the_default_folder_is_assembled_once_and_again_when_the_shipped_files_change(minilm_path, cache, tmp_path,
                                                                                    monkeypatch):
    shipped = Path(shutil.copytree(DEFAULT_MODEL_DIR, tmp_path / "default_model"))
    monkeypatch.setattr(default_folder, "DEFAULT_MODEL_DIR", shipped)
    first = default_folder.default_model_folder(cache)
    stamp = (first / "modules.json").stat().st_mtime_ns
    assert default_folder.default_model_folder(cache) == first and (first / "modules.json").stat().st_mtime_ns == stamp
    config = json.loads((shipped / "qcompress.json").read_text())
    (shipped / "qcompress.json").write_text(json.dumps({**config, "query_prompt": "query: "}))
    second = default_folder.default_model_folder(cache)
    assert second != first and json.loads((second / "qcompress.json").read_text())["query_prompt"] == "query: "
    assert json.loads((second / "config_sentence_transformers.json").read_text())["prompts"]["query"] == "query: "
    assert sorted(p.name for p in (cache / "models").iterdir()) == sorted([".default.lock", first.name, second.name])


def test_two_callers_at_once_assemble_the_folder_once_and_a_failed_assembly_leaves_nothing(minilm_path, cache,
                                                                                        monkeypatch):
    real, calls = default_folder.complete_folder, []

    def slow(*args, **kwargs):
        calls.append(1)
        time.sleep(0.5)  # the other caller arrives while this one assembles
        real(*args, **kwargs)

    def broken(head_only, dest, **kwargs):
        (Path(dest) / "encoder").mkdir(parents=True)
        (Path(dest) / "encoder" / "config.json").write_text("{}")
        raise OSError("No space left on device")

    monkeypatch.setattr(default_folder, "complete_folder", broken)
    with pytest.raises(OSError, match="No space"):
        default_folder.default_model_folder(cache)
    assert [p.name for p in (cache / "models").iterdir()] == [".default.lock"]  # no half folder, no temporary one

    monkeypatch.setattr(default_folder, "complete_folder", slow)
    results = []
    threads = [threading.Thread(target=lambda: results.append(default_folder.default_model_folder(cache)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(results) == 2 and results[0] == results[1]
    assert (results[0] / "modules.json").is_file()


def test_the_must_show_line_runs_in_a_fresh_interpreter(minilm_path, tmp_path):
    """The issue's line as the README documents it ("Use with sentence-transformers"), from the source tree: the
    distribution need not be installed under its name for sentence-transformers' requirement check."""
    section = (ROOT / "README.md").read_text().split("\n## Use with sentence-transformers\n", 1)[1]
    command = next(line for line in section.splitlines() if line.startswith("python -c "))
    _, _, code = shlex.split(command)
    assert code.startswith("import qcompress;") and "qcompress.default_model_folder()" in code
    env = dict(os.environ, PYTHONPATH=str(ROOT), QCOMPRESS_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "(1, 128)"


def test_without_trust_remote_code_sentence_transformers_says_what_it_needs(minilm_path, cache):
    with pytest.raises(ValueError, match=r"(?s)qcompress\.st_modules\.InputMixingModule.*trust_remote_code=True"):
        SentenceTransformer(default_folder.default_model_folder(cache), device="cpu")


def test_the_folders_requirements_name_the_distribution(tiny_encoder, tmp_path):
    build_model(tiny_encoder, head="quantum", dim=8, max_length=64, device="cpu").save(tmp_path / "m")
    requirements = json.loads((tmp_path / "m" / "config_sentence_transformers.json").read_text())["requirements"]
    assert requirements[DISTRIBUTION]["specifier"] == f">={__version__}" and "qcompress" not in requirements
    from sentence_transformers.util.environment import get_installed_version

    assert get_installed_version(DISTRIBUTION) == __version__  # `import qcompress` answers for it


# -- what SentenceTransformer.save (and so push_to_hub) writes loads as --model ---------------------------------------


@pytest.mark.parametrize("head, similarity, mixing", [("quantum", "fidelity", "pca"), ("quantum", "fidelity", "none"),
                                                      ("linear", "cosine", "none"), ("linear", "fidelity", "none"),
                                                      ("none", "fidelity", "none"), ("none", "cosine", "none")])
def test_a_folder_saved_by_sentence_transformers_loads_as_the_same_model(tiny_encoder, tmp_path, head, similarity,
                                                                        mixing):
    torch.manual_seed(1)
    model = build_model(tiny_encoder, head=head, dim=None if head == "none" else 8, similarity=similarity,
                        mixing=mixing, max_length=48, normalize=head == "linear", query_prompt="q: ", device="cpu")
    if mixing != "none":
        from qcompress.mixing import InputMixing

        model.mixing = InputMixing.fit(mixing, torch.randn(50, model.in_dim))
    model.save(tmp_path / "m")
    st = SentenceTransformer(tmp_path / "m", trust_remote_code=True, device="cpu")
    st.save(str(tmp_path / "st"))
    assert not (tmp_path / "st" / "qcompress.json").exists()
    again = load_model(tmp_path / "st", device="cpu")
    expected = {**model.config.to_dict(), "encoder": ".", "base_model_license": None}
    assert again.config.to_dict() == expected
    torch.testing.assert_close(again.encode(TEXTS, role="query"), model.encode(TEXTS, role="query"), atol=0, rtol=0)
    # ... and the command line takes it as --model
    pairs = "a wing\tthe flow on a wing\n"
    result = runner.invoke(app, ["score", "--pairs", "-", "--model", str(tmp_path / "st"), "--device", "cpu"],
                           input=pairs)
    assert result.exit_code == 0, result.output


def test_a_pipeline_qcompress_does_not_compute_is_refused_naming_modules_json(tiny_encoder, tmp_path):
    build_model(tiny_encoder, head="linear", dim=8, max_length=48, device="cpu").save(tmp_path / "m")
    st_folder = tmp_path / "st"
    SentenceTransformer(tmp_path / "m", device="cpu").save(str(st_folder))
    modules = json.loads((st_folder / "modules.json").read_text())
    dense = json.loads((st_folder / modules[2]["path"] / "config.json").read_text())
    (st_folder / modules[2]["path"] / "config.json").write_text(json.dumps(
        {**dense, "activation_function": "torch.nn.modules.activation.ReLU"}))
    with pytest.raises(InputError, match=r'modules\.json: field "type": the modules after pooling \(Dense\) are not'):
        load_model(st_folder)
    (st_folder / "modules.json").write_text(json.dumps([*modules, {"idx": 9, "name": "9", "path": "../x",
                                                                   "type": "sentence_transformers.models.Normalize"}]))
    with pytest.raises(InputError, match="inside the model's"):
        load_model(st_folder)


def test_a_saved_quantum_head_without_its_weights_is_refused_naming_the_file(model_folder, tmp_path):
    st_folder = tmp_path / "st"
    SentenceTransformer(model_folder, trust_remote_code=True, device="cpu").save(str(st_folder))
    weights = st_folder / "3_QuantumHeadModule" / "model.safetensors"
    save_file({"head.other": load_file(str(weights))["head.raw"]}, str(weights))
    with pytest.raises(InputError, match=r"QuantumHeadModule/model\.safetensors: the weights lack 'raw'"):
        load_model(st_folder)
    weights.unlink()
    with pytest.raises(InputError, match=r"QuantumHeadModule/model\.safetensors: is missing"):
        load_model(st_folder)


# -- qcompress push ---------------------------------------------------------------------------------------------------


class FakeHub:
    """HfApi's create_repo, create_branch and create_commit, recorded instead of sent."""

    def __init__(self, monkeypatch):
        self.calls, self.files = [], {}
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        hub = self

        def create_repo(api, repo_id, **kwargs):
            hub.calls.append(("create_repo", repo_id, kwargs))
            return SimpleNamespace(repo_id=repo_id)

        def create_branch(api, repo_id, **kwargs):
            hub.calls.append(("create_branch", repo_id, kwargs))

        def create_commit(api, repo_id, operations, **kwargs):
            hub.calls.append(("create_commit", repo_id, kwargs))
            for op in operations:
                source = op.path_or_fileobj
                hub.files[op.path_in_repo] = source if isinstance(source, bytes) else Path(source).read_bytes()
            return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/abc")

        for name, method in (("create_repo", create_repo), ("create_branch", create_branch),
                             ("create_commit", create_commit)):
            monkeypatch.setattr(HfApi, name, method)

    def publish(self, root: Path, repo_id: str, staging: Path) -> Path:
        """The uploaded files as a Hugging Face cache at `root` holding `repo_id` (what a download would give)."""
        for path, content in self.files.items():
            (staging / path).parent.mkdir(parents=True, exist_ok=True)
            (staging / path).write_bytes(content)
        return hub_cache(root, repo_id, staging)


@pytest.fixture(scope="module")
def trained(model_folder, tmp_path_factory) -> Path:
    """A model folder with a training log beside the model's files."""
    folder = Path(shutil.copytree(model_folder, tmp_path_factory.mktemp("push") / "qbfec"))
    (folder / "train_log.jsonl").write_text("{}\n")
    return folder


def test_push_uploads_the_folder_with_qcompress_json_a_card_naming_the_repository_and_safetensors_only(
        trained, tmp_path, monkeypatch):
    hub = FakeHub(monkeypatch)
    result = runner.invoke(app, ["push", str(trained), "org/qbfec", "--private", "--branch", "v2", "-m", "first"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "https://huggingface.co/org/qbfec/commit/abc"
    assert [c[0] for c in hub.calls] == ["create_repo", "create_branch", "create_commit"]
    assert hub.calls[0][2]["private"] is True and hub.calls[1][2]["branch"] == "v2"
    assert hub.calls[2][2] == {"commit_message": "first", "revision": "v2"}
    local = sorted(p.relative_to(trained).as_posix() for p in trained.rglob("*") if p.is_file())
    assert sorted(hub.files) == local and "qcompress.json" in hub.files and "train_log.jsonl" in hub.files
    weights = [p for p in hub.files if p.endswith((".safetensors", ".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
    assert weights and all(p.endswith(".safetensors") for p in weights)
    assert hub.files["qcompress.json"] == (trained / "qcompress.json").read_bytes()
    card = hub.files["README.md"].decode()
    assert 'SentenceTransformer("org/qbfec", trust_remote_code=True)' in card and CARD_MARKER in card
    assert (trained / "README.md").read_text() != card  # the folder itself is not changed
    # what was uploaded loads by its id, in qcompress and in sentence-transformers
    cache_root = hub.publish(tmp_path / "hf", "org/qbfec", tmp_path / "uploaded")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache_root))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    expected = load_model(trained, device="cpu").encode(TEXTS, convert_to_tensor=True)
    loaded = load_model("org/qbfec", device="cpu").encode(TEXTS, convert_to_tensor=True)
    torch.testing.assert_close(loaded, expected, atol=0, rtol=0)
    st = SentenceTransformer("org/qbfec", trust_remote_code=True, device="cpu", cache_folder=str(cache_root))
    torch.testing.assert_close(st.encode(TEXTS, convert_to_tensor=True), expected, atol=1e-5, rtol=0)


def test_push_of_a_folder_sentence_transformers_saved_adds_its_qcompress_json(trained, tmp_path, monkeypatch):
    SentenceTransformer(trained, trust_remote_code=True, device="cpu").save(str(tmp_path / "st"))
    hub = FakeHub(monkeypatch)
    result = runner.invoke(app, ["push", str(tmp_path / "st"), "org/st"])
    assert result.exit_code == 0, result.output
    config = ModelConfig.from_dict(json.loads(hub.files["qcompress.json"]))
    assert (config.head, config.dim, config.encoder) == ("quantum", 8, ".")
    assert hub.files["README.md"] == (tmp_path / "st" / "README.md").read_bytes()  # its card, as it is
    assert "create_branch" not in [c[0] for c in hub.calls]


def test_push_of_the_shipped_head_only_folder_uploads_it_complete(minilm_path, monkeypatch):
    hub = FakeHub(monkeypatch)
    result = runner.invoke(app, ["push", str(DEFAULT_MODEL_DIR), "org/default"])
    assert result.exit_code == 0, result.output
    assert {"encoder/model.safetensors", "encoder/tokenizer.json", "modules.json", "head.safetensors",
            "mixing.safetensors", "README.md"} <= set(hub.files)
    assert json.loads(hub.files["qcompress.json"])["encoder"] == "encoder"
    assert 'SentenceTransformer("org/default", trust_remote_code=True)' in hub.files["README.md"].decode()


def test_push_dry_run_lists_the_files_and_sends_nothing(trained, monkeypatch):
    hub = FakeHub(monkeypatch)
    result = runner.invoke(app, ["push", str(trained), "org/qbfec", "--dry-run"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert listed["qcompress.json"] == (trained / "qcompress.json").stat().st_size and hub.calls == []


def test_push_refuses_pickles_code_and_links_out_of_the_folder(trained, tmp_path, monkeypatch):
    hub = FakeHub(monkeypatch)
    for name in ("encoder/pytorch_model.bin", "modeling_x.py"):
        folder = Path(shutil.copytree(trained, tmp_path / name.replace("/", "-")))
        (folder / name).write_bytes(b"x")
        one_line_error(runner.invoke(app, ["push", str(folder), "org/x"]), name, "safetensors weights only")
    folder = Path(shutil.copytree(trained, tmp_path / "linked"))
    (tmp_path / "outside.txt").write_text("secret")
    (folder / "notes.txt").symlink_to(tmp_path / "outside.txt")
    one_line_error(runner.invoke(app, ["push", str(folder), "org/x"]), "notes.txt links outside the folder")
    one_line_error(runner.invoke(app, ["push", str(tmp_path / "nope"), "org/x"]), "no such model folder")
    one_line_error(runner.invoke(app, ["push", str(trained), "../x"]), "not a Hub repository id")
    assert hub.calls == []


def test_push_offline_not_logged_in_refused_or_unreachable_is_one_line(trained, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    one_line_error(runner.invoke(app, ["push", str(trained), "org/x"]), "offline (HF_HUB_OFFLINE=1)")
    hub = FakeHub(monkeypatch)  # online from here on, with HfApi's methods replaced

    def raising(error):
        def method(api, repo_id, **kwargs):
            raise error
        return method

    monkeypatch.setattr(HfApi, "create_repo", raising(LocalTokenNotFoundError("Token is required")))
    one_line_error(runner.invoke(app, ["push", str(trained), "org/x"]), "not logged in", "hf auth login")
    forbidden = HfHubHTTPError("403 Forbidden: no write access", response=SimpleNamespace(
        status_code=403, headers={}, request=None))
    monkeypatch.setattr(HfApi, "create_repo", raising(forbidden))
    one_line_error(runner.invoke(app, ["push", str(trained), "org/x"]), "refused the push (403 Forbidden",
                   "may write to org/x")
    assert hub.files == {}


def test_push_without_a_network_is_one_line(trained, monkeypatch):
    """The real HfApi against a local port nothing listens on: the connection is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    line = one_line_error(runner.invoke(app, ["push", str(trained), "org/x"]), "cannot reach the Hugging Face Hub",
                          f"127.0.0.1:{port}", "needs a network connection")
    assert "Traceback" not in line


# -- model cards ------------------------------------------------------------------------------------------------------


def front_matter(card: str) -> dict[str, list[str] | str]:
    """The card's YAML header as key -> value or list of items (the subset of YAML the cards use)."""
    header, data, key = card.split("---\n")[1], {}, None
    for line in header.splitlines():
        if line.startswith("- "):
            data[key].append(line[2:])
        else:
            key, _, value = line.partition(":")
            data[key] = value.strip() or []
    return data


def test_a_card_has_the_hubs_header_and_a_usage_block_that_names_a_hub_id():
    config = ModelConfig.create(encoder="encoder", head="quantum", in_dim=384, dim=128, mixing="pca",
                                base_model="sentence-transformers/all-MiniLM-L6-v2", base_model_license="apache-2.0",
                                training={"dataset": "beir/scifact/train", "loss": "distill", "seed": 1})
    card = model_card(config, "qbec-scifact")
    header = front_matter(card)
    assert header["library_name"] == "sentence-transformers" and header["pipeline_tag"] == "sentence-similarity"
    assert header["base_model"] == "sentence-transformers/all-MiniLM-L6-v2" and header["license"] == "apache-2.0"
    assert header["datasets"] == ["BeIR/scifact"]
    assert {"qcompress", "quantum-inspired", "sentence-transformers"} <= set(header["tags"])
    assert f"```bash\npip install {DISTRIBUTION}\n```" in card
    assert 'SentenceTransformer("your-name/qbec-scifact", trust_remote_code=True)' in card
    assert 'qcompress.load_model("your-name/qbec-scifact")' in card and "--model your-name/qbec-scifact" in card
    assert '"qbec-scifact"' not in card  # never the local folder's name
    assert "label-free distillation" in card and "| loss | distill |" in card
    cosine = model_card(config.replace(head="linear", mixing="none", similarity="cosine", training=None), "org/b")
    assert 'SentenceTransformer("org/b")' in cosine and "datasets" not in front_matter(cosine)
    assert "sentence-transformers alone loads it" in cosine


def test_the_readme_documents_the_default_folder_and_push():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Use with sentence-transformers\n", 1)[1].split("\n## ", 1)[0]
    assert "qcompress.default_model_folder()" in section and "trust_remote_code" in section
    assert "qcompress push" in readme.split("\n## Share on the Hub\n", 1)[1].split("\n## ", 1)[0]
    assert callable(qcompress.default_model_folder)
