"""Inference backends: a model's encoder run by torch in bfloat16, or by ONNX Runtime or OpenVINO in float32, bfloat16
or int8, instead of torch in float32.

    torch           the encoder as loaded (what training uses; the default)
    torch-bf16      the same encoder under torch.autocast(bfloat16): matrix products in bfloat16, on any device
    onnx            the encoder exported to ONNX, run by ONNX Runtime (float32)
    onnx-int8       that ONNX model with int8 weights (dynamic quantization by onnxruntime, set for this CPU)
    openvino        the ONNX model converted to OpenVINO (float32 weights and inference precision)
    openvino-bf16   that OpenVINO model with bfloat16 inference precision
    openvino-int8   that OpenVINO model quantized by NNCF (static int8, calibrated on the bundled Cranfield corpus)

bfloat16 is fast only where the CPU has it (AMX or AVX512_BF16: Intel Sapphire Rapids and later, AMD Zen 4 and
later; `bf16_native()`), and there it keeps far more of float32's outputs than int8 does (the README's table, from
benchmarks/compress_speed.py, says how much of each). Without it, torch emulates bfloat16 (slower than float32:
attach_backend says so) and OpenVINO runs float32 (the model's `backend_variant`, and so the pooled-output cache,
then say "openvino").

Only the transformer moves: tokenisation (the model's tokenizer, max length, prompts), longest-first batching
(qcompress.batching), pooling (qcompress.pooling) and the head stay qcompress's, so a backend changes nothing but
how the token vectors are computed. int8 outputs differ from float32 ones: the pooled-output cache keys them by
backend (qcompress.cache.encoder_key), and `benchmarks/compress_speed.py` measures what they cost in NDCG@10.

Each export is made once and kept beside the pooled-output cache, keyed by the encoder's weights and the backend:
    CACHE/exported/<weights digest>/onnx/model.onnx                 torch.onnx (TorchScript exporter, opset 17)
    CACHE/exported/<weights digest>/onnx-int8-<cpu>/model.onnx      from onnx/
    CACHE/exported/<weights digest>/openvino/model.xml, .bin        from onnx/
    CACHE/exported/<weights digest>/openvino-int8/model.xml, .bin   from openvino/
The dynamic int8 settings depend on the CPU, as optimum's `AutoQuantizationConfig` names them (`onnx_int8_config`):
avx512_vnni and avx512 quantize weights to int8 (u8 x s8 products), avx2 and arm64 to uint8 (u8 x u8: without
VNNI, AVX2's u8 x s8 instruction can saturate); per channel, symmetric weights, full range. The folder and the
pooled-output cache key name the settings, so a cache shared by two kinds of CPU never mixes their outputs.
Each folder is written under a temporary name and renamed when complete (qcompress.atomic), so a run interrupted
while exporting leaves nothing half-made, and two runs exporting at once both succeed. The static quantization's
calibration texts are fixed (the first CALIBRATION_TEXTS documents of the bundled Cranfield corpus, with the
document prompt), so that an export depends on the weights alone; its folder's `export.json` says so.

Why not sentence-transformers' own `backend="onnx"` / `"openvino"`: both go through optimum, and no release of
optimum-onnx (0.1.0: transformers < 4.58) or optimum-intel (2.2.0: transformers < 5.6, huggingface_hub < 1.22)
installs beside the sentence-transformers 6 (transformers >= 5) that qcompress needs; they also fail to import
against transformers 5.25. The runtimes they wrap (onnxruntime, openvino, nncf) have no such pins, and the
quantization settings here are the ones sentence-transformers' `export_dynamic_quantized_onnx_model(..., "avx2")`
and `export_static_quantized_openvino_model` pass through optimum. ONNX Runtime's threads do not spin-wait
(`session.intra_op.allow_spinning` 0): on cores that other processes share, spinning threads took the cores from
the threads doing the work (measured slower on this project's shared 2-core machine), as OpenMP's did for torch
(qcompress.search.workers).

Example:
    >>> BACKENDS
    ('torch', 'torch-bf16', 'onnx', 'onnx-int8', 'openvino', 'openvino-bf16', 'openvino-int8')
    >>> BACKEND_EXTRAS["onnx-int8"], BACKEND_EXTRAS["openvino-bf16"], "torch-bf16" in BACKEND_EXTRAS
    ('onnx', 'openvino', False)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from qcompress.atomic import atomic_dir
from qcompress.batching import eval_mode
from qcompress.cache import resolve_cache_dir, weights_digest
from qcompress.defaults import BACKENDS
from qcompress.errors import InputError, require

__all__ = ["BACKENDS", "BACKEND_EXTRAS", "ExportedEncoder", "AutocastEncoder", "attach_backend", "export_folder",
           "require_backend", "onnx_int8_config", "bf16_native", "CALIBRATION_TEXTS"]

# Which qcompress extra installs each backend's packages, and the modules it imports (package name: the same).
# torch and torch-bf16 need nothing beyond qcompress's own dependencies.
BACKEND_EXTRAS = {"onnx": "onnx", "onnx-int8": "onnx", "openvino": "openvino", "openvino-bf16": "openvino",
                  "openvino-int8": "openvino"}
_MODULES = {"onnx": ("onnx", "onnxruntime"), "onnx-int8": ("onnx", "onnxruntime", "onnxruntime.quantization"),
            "openvino": ("onnx", "openvino"), "openvino-bf16": ("onnx", "openvino"),
            "openvino-int8": ("onnx", "openvino", "nncf")}
_PACKAGES = {"onnxruntime.quantization": "onnxruntime"}
_SOURCE = {"onnx-int8": "onnx", "openvino": "onnx", "openvino-int8": "openvino"}  # what each export starts from
_MODEL_FILE = {"onnx": "model.onnx", "onnx-int8": "model.onnx", "openvino": "model.xml", "openvino-int8": "model.xml"}
_EXPORTED_AS = {"openvino-bf16": "openvino"}  # a backend that runs another's export, at another precision
# Part of the weights digest: a change to how exports are made starts new folders. 2: exported with eager attention.
EXPORT_VERSION = 2
OPSET = 17
CALIBRATION_TEXTS = 300  # the static quantization's calibration set (sentence-transformers' default count)
Notify = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def require_backend(backend: str) -> None:
    """Import what `backend` needs, or raise `MissingDependency` naming the extra that installs it (one line).

    Example:
        >>> require_backend("torch")
        >>> require_backend("tpu")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        qcompress.errors.InputError: unknown backend 'tpu'; choose one of torch, torch-bf16, onnx, onnx-int8, ...
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    for module in _MODULES.get(backend, ()):
        require(module, f"--backend {backend}", package=_PACKAGES.get(module, module), extra=BACKEND_EXTRAS[backend])


def onnx_int8_config() -> str:
    """The dynamic int8 settings for this CPU, by optimum's names (those sentence-transformers'
    `export_dynamic_quantized_onnx_model` takes): arm64, avx512_vnni, avx512 or avx2 (also where the CPU's features
    cannot be read).

    Example:
        >>> onnx_int8_config() in ("arm64", "avx512_vnni", "avx512", "avx2")
        True
    """
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    flags = _cpu_flags()
    return "avx512_vnni" if "avx512_vnni" in flags else "avx512" if "avx512bw" in flags else "avx2"


def bf16_native() -> bool:
    """Whether this CPU computes in bfloat16 itself (AMX or AVX512_BF16 on x86; BF16 on arm64), rather than
    emulating it more slowly than float32. False where the CPU's features cannot be read.

    Example:
        >>> bf16_native() in (True, False)
        True
    """
    return bool(_cpu_flags() & {"amx_bf16", "avx512_bf16", "bf16"})


def _cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them (flags on x86, Features on arm64); none elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            return set(next((line.split(":", 1)[1].split() for line in cpuinfo
                             if line.startswith(("flags", "Features"))), []))
    except OSError:  # not Linux
        return set()


def _variant(backend: str) -> str:
    """The backend as its export folder names it: onnx-int8 with this CPU's settings (onnx-int8-avx2...)."""
    return f"{backend}-{onnx_int8_config()}" if backend == "onnx-int8" else backend


def export_folder(model, backend: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where `backend`'s export of the model's encoder is kept: CACHE/exported/<weights digest>/<backend>, for
    onnx-int8 with this CPU's settings (module docstring), under `resolve_cache_dir(cache_dir)`."""
    digest = weights_digest(model.encoder, "export", EXPORT_VERSION)
    return resolve_cache_dir(cache_dir) / "exported" / digest / _variant(backend)


class ExportedEncoder:
    """An exported encoder, run by its runtime: tokenizer outputs (named tensors) -> token vectors (B, T, H) float32.

    `backend` names it; `folder` holds its files; `variant` says everything that decides the outputs besides the
    weights (by default the folder's name: onnx-int8-avx2, the int8 settings; openvino-bf16 where OpenVINO computes in
    bfloat16); `inputs` are the tokenizer outputs it takes, in order; `export_version` how the export was made
    (EXPORT_VERSION when it was: part of the pooled-output cache's key, so a new way of exporting starts a new
    cache)."""

    def __init__(self, backend: str, folder: Path, run: Callable[[dict[str, np.ndarray]], np.ndarray],
                 inputs: tuple[str, ...], variant: str | None = None, export_version: int | None = None) -> None:
        self.backend, self.folder, self._run, self.inputs = backend, folder, run, inputs
        self.variant, self.export_version = variant or folder.name, export_version

    def __call__(self, batch: dict[str, Tensor]) -> Tensor:
        arrays = {name: batch[name].cpu().numpy().astype(np.int64) for name in self.inputs}
        return torch.from_numpy(np.asarray(self._run(arrays), dtype=np.float32))

    def __repr__(self) -> str:
        return f"ExportedEncoder({self.backend!r}, {str(self.folder)!r})"


def attach_backend(model, backend: str, cache_dir: str | os.PathLike | None = None, *,
                   notify: Notify = _stderr) -> None:
    """Run `model`'s encoder through `backend` from now on (`model.runtime`; "torch": the encoder itself again).

    torch-bf16 runs on the model's device; the others are exports, made on first use (one line through `notify`,
    stderr by default) and loaded afterwards, and need the model on the CPU (their runtimes are CPU ones). A bfloat16
    backend on a CPU without bfloat16 says what it does instead (one line through `notify`). Raises
    `MissingDependency` (the extra to install) when the backend's packages are missing.

    Example:
        >>> from qcompress.model import build_model
        >>> model = build_model("minilm", similarity="fidelity", device="cpu")
        >>> attach_backend(model, "torch"); model.backend
        'torch'
        >>> attach_backend(model, "torch-bf16", notify=lambda line: None); model.backend_variant
        'torch-bf16'
    """
    require_backend(backend)
    if backend == "torch":
        model.runtime = None
        return
    if backend == "torch-bf16":
        if model.device.type == "cpu" and not bf16_native():
            notify("--backend torch-bf16: this CPU has no bfloat16 instructions (AMX, AVX512_BF16): torch emulates "
                   "them, slower than --backend torch")
        model.runtime = AutocastEncoder(model.encoder)
        return
    if model.device.type != "cpu":
        raise InputError(f"--backend {backend} runs on the CPU; the model is on {model.device} (use --device cpu)")
    exported = _EXPORTED_AS.get(backend, backend)
    folder = _ensure_export(model, exported, cache_dir, notify)
    info = json.loads((folder / "export.json").read_text())
    run, precision = _load_runtime(exported, folder, bf16=backend.endswith("-bf16"))
    variant = backend if exported != backend and precision == "bf16" else folder.name  # f32: the export's outputs
    if backend.endswith("-bf16") and precision != "bf16":
        notify(f"--backend {backend}: this CPU has no bfloat16 instructions (AMX, AVX512_BF16): OpenVINO runs "
               f"{precision} instead")
    model.runtime = ExportedEncoder(backend, folder, run, tuple(info["inputs"]), variant=variant,
                                    export_version=info["export_version"])


class AutocastEncoder:
    """The encoder itself under torch.autocast(bfloat16) (--backend torch-bf16): tokenizer outputs -> token vectors
    (B, T, H) float32. Matrix products run in bfloat16, normalisations and softmax in float32 (autocast's lists)."""

    backend = variant = "torch-bf16"
    folder = None

    def __init__(self, encoder: nn.Module) -> None:
        self.encoder = encoder

    def __call__(self, batch: dict[str, Tensor]) -> Tensor:
        device = next(self.encoder.parameters()).device.type
        with torch.autocast(device, dtype=torch.bfloat16):
            return self.encoder(**batch).last_hidden_state.float()

    def __repr__(self) -> str:
        return "AutocastEncoder('torch-bf16')"


def _ensure_export(model, backend: str, cache_dir, notify: Notify) -> Path:
    """The folder of `backend`'s export, made first (and its sources, e.g. onnx/ before onnx-int8/) if missing."""
    folder = export_folder(model, backend, cache_dir)
    if (folder / "export.json").is_file():
        return folder
    source = _ensure_export(model, _SOURCE[backend], cache_dir, notify) if backend in _SOURCE else None
    what = {"onnx-int8": f"quantizing it to int8 (dynamic, {onnx_int8_config()} settings)",
            "openvino": "converting it to OpenVINO",
            "openvino-int8": f"quantizing it to int8 (static, calibrated on {CALIBRATION_TEXTS} Cranfield texts)"}
    notify(f"exporting the encoder for --backend {backend}: {what.get(backend, 'torch -> ONNX')} (once; kept in "
           f"{folder})")
    start = time.perf_counter()
    # A folder without export.json is no export (made by hand, or by hand half-deleted): replaced. Two runs exporting
    # at once both finish; the second's folder replaces the first's, the same files.
    with atomic_dir(folder, overwrite=True) as tmp, _quiet():
        inputs = _EXPORTS[backend](model, source, tmp)
        info = {"backend": backend, "inputs": list(inputs), "source": source.name if source else "torch",
                "export_version": EXPORT_VERSION, **_settings(backend)}
        (tmp / "export.json").write_text(json.dumps(info, indent=2) + "\n")
    notify(f"exported in {time.perf_counter() - start:.0f} s")
    return folder


def _settings(backend: str) -> dict:
    """How an export was made, recorded in its export.json."""
    if backend == "onnx":
        return {"exporter": f"torch.onnx TorchScript exporter, torch {torch.__version__}, eager attention",
                "opset": OPSET}
    if backend == "onnx-int8":
        config = onnx_int8_config()
        weights = "int8" if config.startswith("avx512") else "uint8"
        return {"quantization": f"onnxruntime quantize_dynamic: {weights} weights, symmetric, per channel, full range, "
                f"uint8 activations (optimum's AutoQuantizationConfig.{config}(is_static=False))", "cpu": config}
    if backend == "openvino":
        return {"precision": "float32 weights (compress_to_fp16=False), f32 inference"}
    return {"quantization": "nncf.quantize: static int8, preset mixed, model type transformer, fast bias correction",
            "calibration": f"the first {CALIBRATION_TEXTS} documents of the bundled Cranfield corpus (title + text), "
                           "with the model's document prompt, at its max length"}


@contextlib.contextmanager
def _quiet():
    """Exporters' chatter kept quiet (tracer warnings; NNCF's INFO lines; onnxruntime's advice to pre-process, on the
    root logger) and off stdout (NNCF's progress bars), which carries results (`compress -o -` writes JSON lines)."""
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


class _Hidden(nn.Module):
    """The encoder as a function of positional tensors (what the exporter traces): token vectors out."""

    def __init__(self, encoder: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.encoder, self.names = encoder, names

    def forward(self, *tensors: Tensor) -> Tensor:
        return self.encoder(**dict(zip(self.names, tensors))).last_hidden_state


def _export_onnx(model, source: Path | None, out: Path) -> tuple[str, ...]:
    sample = model.tokenize(["qcompress exports this encoder", "a second, longer text, so that the batch pads one"])
    names = tuple(sample)
    wrapper = _Hidden(model.encoder, names).eval()
    axes = {name: {0: "batch", 1: "tokens"} for name in (*names, "last_hidden_state")}
    # The exporter restores the mode of the module it is given, and train() reaches the encoder: eval_mode puts
    # the encoder back as it was (an encoder left in training mode would run dropout).
    with eval_mode(model.encoder), _eager_attention(model.encoder), torch.no_grad():
        torch.onnx.export(wrapper, tuple(sample[name].cpu() for name in names), str(out / "model.onnx"),
                          input_names=list(names), output_names=["last_hidden_state"], dynamic_axes=axes,
                          opset_version=OPSET, dynamo=False)
    return names


@contextlib.contextmanager
def _eager_attention(encoder: nn.Module):
    """The encoder with transformers' eager attention while exported: plain MatMul/Softmax nodes, which ONNX Runtime's
    int8 kernels run markedly faster than the traced scaled_dot_product_attention graph (the README's speed table;
    the float32 outputs agree to 1e-5). Encoders without a choice of attention are exported as they are."""
    setter, config = getattr(encoder, "set_attn_implementation", None), getattr(encoder, "config", None)
    before = getattr(config, "_attn_implementation", None)
    if setter is None or before in (None, "eager"):
        yield
        return
    setter("eager")
    try:
        yield
    finally:
        setter(before)


def _export_onnx_int8(model, source: Path, out: Path) -> tuple[str, ...]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    weights = QuantType.QInt8 if onnx_int8_config().startswith("avx512") else QuantType.QUInt8
    quantize_dynamic(source / "model.onnx", out / "model.onnx", per_channel=True, reduce_range=False,
                     weight_type=weights, extra_options={"WeightSymmetric": True})
    return _inputs_of(source)


def _export_openvino(model, source: Path, out: Path) -> tuple[str, ...]:
    import openvino

    openvino.save_model(openvino.convert_model(source / "model.onnx"), out / "model.xml", compress_to_fp16=False)
    return _inputs_of(source)


def _export_openvino_int8(model, source: Path, out: Path) -> tuple[str, ...]:
    import nncf
    import openvino

    from qcompress.data import bundled_path
    from qcompress.formats import read_texts

    inputs = _inputs_of(source)
    texts = [text for _, text in read_texts(bundled_path("cranfield") / "corpus.jsonl")[:CALIBRATION_TEXTS]]
    samples = [model.tokenize([text]) for text in model.prompted(texts, "document")]
    dataset = nncf.Dataset(samples, lambda s: {name: s[name].numpy().astype(np.int64) for name in inputs})
    advanced = nncf.AdvancedQuantizationParameters(overflow_fix=nncf.OverflowFix.DISABLE)
    quantized = nncf.quantize(openvino.Core().read_model(source / "model.xml"), dataset,
                              preset=nncf.QuantizationPreset.MIXED, model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(samples), fast_bias_correction=True, advanced_parameters=advanced)
    openvino.save_model(quantized, out / "model.xml", compress_to_fp16=False)
    return inputs


_EXPORTS = {"onnx": _export_onnx, "onnx-int8": _export_onnx_int8, "openvino": _export_openvino,
            "openvino-int8": _export_openvino_int8}


def _inputs_of(folder: Path) -> tuple[str, ...]:
    return tuple(json.loads((folder / "export.json").read_text())["inputs"])


def _load_runtime(backend: str, folder: Path, bf16: bool = False) -> tuple[Callable, str]:
    """A function of one batch's named int64 arrays -> token vectors, on torch's thread count (the cores torch
    would have used), and the precision it computes in: "f32", or for OpenVINO with `bf16` "bf16" where the CPU has
    it (OpenVINO falls back to f32 where not)."""
    threads = torch.get_num_threads()
    path = folder / _MODEL_FILE[backend]
    if backend.startswith("onnx"):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # module docstring
        # A memory pattern is planned per input shape, and every batch has its own (length): measured 2.4 GiB RSS
        # after 300 Cranfield texts with it, 1.9 GiB without (torch: 0.7 GiB); no speed lost.
        options.enable_mem_pattern = False
        options.log_severity_level = 3  # errors only: its warnings are about graph optimisations, not the user's input
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return (lambda arrays: session.run(None, arrays)[0]), "f32"
    import openvino

    # f32 unless bf16 is asked for: OpenVINO's own default on AMX CPUs is a silent bf16.
    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32"}
    compiled = openvino.Core().compile_model(str(path), "CPU", config)
    precision = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    return (lambda arrays: compiled(arrays)[0]), ("bf16" if "bf" in precision.lower() else "f32")
