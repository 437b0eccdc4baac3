"""Input mixing before the quantum head (qcompress.mixing, issue 18): orthogonal maps, fits, persistence in qcompress
and sentence-transformers, refusals, and the few-KB head-only folder."""

import json

import pytest
import torch
from safetensors.torch import save_file

from qcompress.errors import InputError
from qcompress.mixing import MIXINGS, InputMixing, hadamard_rotation, mixing_fitted_numbers
from qcompress.model import build_model, load_model
from qcompress.model_config import ModelConfig

TEXTS = ["what is a wing", "heat transfer in a boundary layer", "supersonic flow over a cone", "a b c"]


@pytest.mark.parametrize("n", [12, 384, 768, 7])
def test_hadamard_rotation_is_orthogonal_seeded_and_mixes(n):
    r = hadamard_rotation(n)
    assert torch.allclose(r @ r.T, torch.eye(n, dtype=torch.float64), atol=1e-12)
    assert torch.equal(r, hadamard_rotation(n)) and not torch.equal(r, hadamard_rotation(n, seed=1))
    block = n & -n
    assert int((r != 0).sum(1).min()) == block  # each output mixes a whole block of inputs


def test_fits_preserve_centred_geometry_and_order_by_variance():
    torch.manual_seed(0)
    x = torch.randn(300, 16) * torch.logspace(-2, 1, 16) + 5.0
    centred = x - x.mean(0)
    for kind in MIXINGS[1:]:
        y = InputMixing.fit(kind, x)(x)
        assert torch.allclose(y @ y.T, centred @ centred.T, atol=1e-3), kind
        assert y.mean(0).abs().max() < 1e-4
    for kind in ("pca", "permute"):
        var = InputMixing.fit(kind, x)(x).var(0)
        assert torch.all(var[:-1] >= var[1:] - 1e-4), kind
    assert InputMixing.fit("permute", x).order.tolist() == list(range(15, -1, -1))


def test_fitted_numbers_per_kind():
    assert [mixing_fitted_numbers(k, 768) for k in MIXINGS] == [0, 1536, 768, 768 * 768 + 768]
    with pytest.raises(ValueError, match="unknown mixing 'lda'"):
        mixing_fitted_numbers("lda", 8)


def _fitted_model(encoder, kind):
    torch.manual_seed(1)
    model = build_model(encoder, head="quantum", dim=8, mixing=kind, device="cpu")
    model.mixing.load_state_dict(InputMixing.fit(kind, torch.randn(40, model.in_dim)).state_dict())
    return model


@pytest.mark.parametrize("kind", MIXINGS[1:])
def test_saved_mixing_loads_in_qcompress_and_sentence_transformers(tiny_encoder, tmp_path, kind):
    from sentence_transformers import SentenceTransformer

    model = _fitted_model(tiny_encoder, kind)
    model.save(tmp_path)
    loaded = load_model(tmp_path, device="cpu")
    expected = model.encode(TEXTS, convert_to_tensor=True)
    assert torch.equal(loaded.encode(TEXTS, convert_to_tensor=True), expected)
    st = SentenceTransformer(str(tmp_path), trust_remote_code=True, device="cpu")
    assert torch.allclose(st.encode(TEXTS, convert_to_tensor=True), expected, atol=1e-5)
    # the mixing changes the angles: it is not silently skipped anywhere
    plain = build_model(tiny_encoder, head="quantum", dim=8, device="cpu")
    plain.head.load_state_dict(model.head.state_dict())
    assert not torch.allclose(plain.encode(TEXTS, convert_to_tensor=True), expected, atol=1e-3)


def test_mixing_is_refused_where_it_cannot_apply_and_checked_on_load(tiny_encoder, tmp_path):
    with pytest.raises(ValueError, match="mixing: pca mixes the quantum head's inputs; a linear head has none"):
        ModelConfig.create(encoder="x", head="linear", in_dim=32, dim=8, mixing="pca")
    with pytest.raises(ValueError, match="mixing: unknown mixing 'rotate'"):
        ModelConfig.create(encoder="x", head="quantum", in_dim=32, dim=8, mixing="rotate")
    _fitted_model(tiny_encoder, "pca").save(tmp_path)
    (tmp_path / "mixing.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InputError, match=r"mixing\.safetensors: not a readable safetensors file"):
        load_model(tmp_path, device="cpu")
    save_file({"mean": torch.zeros(3)}, str(tmp_path / "mixing.safetensors"))
    with pytest.raises(InputError, match=r"mixing\.safetensors: not the fitted pca mixing"):
        load_model(tmp_path, device="cpu")


def test_head_only_folder_is_a_few_kb_and_names_its_encoder(minilm_path, tmp_path):
    torch.manual_seed(0)
    model = build_model("minilm", head="quantum", dim=128, mixing="hadamard", max_length=64, device="cpu")
    model.mixing.load_state_dict(InputMixing.fit("hadamard", torch.randn(50, 384) * 0.1).state_dict())
    model.save(tmp_path, store_encoder=False)
    files = {p.name: p.stat().st_size for p in tmp_path.iterdir()}
    assert set(files) == {"qcompress.json", "head.safetensors", "mixing.safetensors"}
    assert sum(files.values()) < 64 * 1024
    assert json.loads((tmp_path / "qcompress.json").read_text())["encoder"] == "sentence-transformers/all-MiniLM-L6-v2"
    loaded = load_model(tmp_path, device="cpu")
    assert torch.equal(loaded.encode(TEXTS, convert_to_tensor=True), model.encode(TEXTS, convert_to_tensor=True))
    trained = build_model(minilm_path, head="quantum", dim=128, device="cpu")
    trained.config = trained.config.replace(encoder_trained=True)
    with pytest.raises(ValueError, match="store_encoder=False needs a frozen encoder"):
        trained.save(tmp_path / "x", store_encoder=False)


def test_count_params_shows_the_mixing_fitted_numbers():
    from typer.testing import CliRunner

    from qcompress.cli import app

    result = CliRunner().invoke(app, ["count-params", "--in-dim", "384", "--out-dim", "128", "--mixing", "pca",
                                      "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["rows"][0]
    assert (row["quantum_head"], row["mixing"], row["mixing_fitted"]) == (3072, "pca", 384 * 384 + 384)
