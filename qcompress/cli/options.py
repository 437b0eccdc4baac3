"""Options that several commands share, each declared once (name, type, default, help), and their choices.

A command declares `batch_size: BatchSize = DEFAULT_BATCH_SIZE` and gets the same flag and help everywhere.
Typer checks what it can before any work (ranges such as `min=1`, choices as Enums): `--batch-size 0` or
`--similarity dot` is a usage error, exit 2.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from qcompress.cli._common import usage_error
from qcompress.defaults import BACKENDS, DEFAULT_BATCH_SIZE, MIXINGS, TORCH_BACKENDS
from qcompress.heads import HEAD_KINDS
from qcompress.similarity import SIMILARITIES

__all__ = ["DEFAULT_BATCH_SIZE", "ENCODER_HELP", "HeadChoice", "SimilarityChoice", "ModelDir", "Encoder", "Head",
           "Similarity", "MaxLength", "BatchSize", "TrustRemoteCode", "CacheDir", "LegacyCache", "NoCache", "Device",
           "AsJson", "Revision", "MixingChoice", "Bits", "Float32", "BackendChoice", "Backend", "value", "check_device",
           "chosen_bits", "chosen_backend"]

ENCODER_HELP = (
    "Instead of --model: an encoder without a trained head (hub id, local folder, or 'minilm' for the offline "
    "all-MiniLM-L6-v2), pooled, normalised and prompted as its sentence-transformers configuration says (else "
    "mean pooling). With --model: the encoder to use instead of the folder's own."
)
DEFAULT_MODEL_HELP = (
    "Without --model and --encoder: the default model, a trained head shipped with qcompress when there is one, "
    "else all-MiniLM-L6-v2's own angles (the paper's QBT); stderr says which."
)


# The registries' names (qcompress.heads, qcompress.similarity) and qcompress.mixing's kinds (MIXINGS, from
# qcompress.defaults): all known without importing torch, so that --help stays free of it.
HeadChoice = Enum("HeadChoice", {name: name for name in HEAD_KINDS}, type=str)
SimilarityChoice = Enum("SimilarityChoice", {name: name for name in SIMILARITIES}, type=str)
MixingChoice = Enum("MixingChoice", {name: name for name in MIXINGS}, type=str)
BackendChoice = Enum("BackendChoice", {name: name for name in BACKENDS}, type=str)  # qcompress.backends


def value(choice: Optional[Enum]) -> Optional[str]:
    """The plain string of an Enum option (None stays None)."""
    return None if choice is None else choice.value


def chosen_bits(bits: Optional[int], float32: bool, uint8: bool = False) -> Optional[int]:
    """--bits B, --float32 and --uint8 as the library's `bits`: B, 0 (no codes) or None (the model's default);
    more than one of them is wrong usage."""
    given = [flag for flag, on in (("--bits", bits is not None), ("--float32", float32), ("--uint8", uint8)) if on]
    if len(given) > 1:
        usage_error(f"{' and '.join(given)} are ways to store the angles; choose one")
    return 0 if float32 or uint8 else bits


def chosen_backend(backend: Enum, device: Optional[str]) -> str:
    """--backend as the library's name (qcompress.backends); an exported backend with a --device other than the CPU
    is wrong usage (its runtimes run on the CPU)."""
    name = value(backend)
    if name not in TORCH_BACKENDS and device is not None and device.split(":")[0] != "cpu":
        usage_error(f"--backend {name} runs on the CPU; drop --device {device} (or use --backend torch)")
    return name


def check_device(device: Optional[str]) -> Optional[str]:
    """--device: a device torch knows and this machine has (torch is imported only when one is given)."""
    if device is None:
        return None
    import torch  # only when --device is given

    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise typer.BadParameter(f"{device!r} is not a device torch knows (cpu, cuda, cuda:1, mps...)") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise typer.BadParameter(f"{device}: this machine has no CUDA device (torch.cuda.is_available() is False)")
    return device


ModelDir = Annotated[Optional[str], typer.Option(
    "--model", help="A model folder written by `qcompress train`, or its Hugging Face Hub id (see --revision). "
    + DEFAULT_MODEL_HELP)]
Revision = Annotated[Optional[str], typer.Option(
    "--revision",
    help="With a Hub id (--model, or --encoder): the branch, tag or commit to use. Default: main. Offline "
    "(HF_HUB_OFFLINE=1) it must be in the local Hugging Face cache.")]
Encoder = Annotated[Optional[str], typer.Option("--encoder", help=ENCODER_HELP)]
Head = Annotated[Optional[HeadChoice], typer.Option(
    "--head", help="With --encoder: only 'none' (a head must be trained first: `qcompress train`, then --model).")]
Similarity = Annotated[Optional[SimilarityChoice], typer.Option(
    "--similarity",
    help="With --encoder: 'cosine' (store and compare the pooled vectors; the paper's BT) or 'fidelity' (store the "
    "encoded qubit angles tanh(u)*pi/2+pi/2 and compare by fidelity; the paper's QBT). Default cosine.")]
MaxLength = Annotated[Optional[int], typer.Option(
    "--max-length", min=1, help="Tokens per text (longer texts are truncated). Default: the model's (256).")]
BatchSize = Annotated[int, typer.Option(
    "--batch-size", min=1, help="Texts per encoder batch (batches go longest-first).")]
Device = Annotated[Optional[str], typer.Option(
    "--device", callback=check_device, help="Where the model runs: cpu, cuda, cuda:1, mps... Default: cuda when "
    "available, else cpu.")]
TrustRemoteCode = Annotated[bool, typer.Option(
    "--trust-remote-code", help="Allow code shipped with the encoder (it runs on this machine).")]
CacheDir = Annotated[Optional[str], typer.Option(
    "--cache-dir", envvar="QCOMPRESS_CACHE", show_envvar=True,
    help="Folder caching pooled encoder outputs per (encoder weights, max length, text), shared by compress, "
    "evaluate and train: texts already there skip the encoder. Default: the user's cache folder "
    "($XDG_CACHE_HOME/qcompress, else ~/.cache/qcompress).")]
LegacyCache = Annotated[Optional[str], typer.Option("--cache", hidden=True, help="The old name of --cache-dir.")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Use no pooled-output cache (read none, write none).")]
Backend = Annotated[BackendChoice, typer.Option(
    "--backend",
    help="What runs the encoder: torch (float32) or torch-bf16 (autocast bfloat16: fast on CPUs with AMX or "
    "AVX512_BF16 and on GPUs, slower elsewhere); onnx or onnx-int8 (ONNX Runtime, float32 or int8 weights: pip install "
    "'qcompress-embeddings[onnx]'); openvino, openvino-bf16 or openvino-int8 (OpenVINO, float32, bfloat16 where the "
    "CPU has it, or int8 calibrated on the bundled Cranfield corpus: pip install 'qcompress-embeddings[openvino]'). "
    "ONNX and OpenVINO: on the CPU, exported once into the cache folder (CACHE/exported/), loaded afterwards. "
    "bfloat16 and int8 outputs differ slightly from float32 ones (the pooled-output cache keeps them apart); "
    "benchmarks/compress_speed.py measures speed and NDCG@10 for each.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")]
Bits = Annotated[Optional[int], typer.Option(
    "--bits", min=1, max=8,
    help="Documents as B-bit codes (1-8 bits a qubit: the index of one of the qubit's 2^B levels), ceil(dim*B/8) "
    "bytes a vector (128 qubits x 4 bits = 64 bytes): what compress stores, and evaluate ranks (float32 query "
    "angles against the codes' levels). Levels: the model's own when it was trained with --bits B, else fitted "
    "per qubit (Lloyd-Max) on the first 4,096 documents. Default: B-bit codes for a model trained with --bits B, "
    "float32 for others. Angle models only.")]
Float32 = Annotated[bool, typer.Option(
    "--float32", help="Float32 angles even for a model trained with --bits (whose documents are its codes by "
    "default).")]
