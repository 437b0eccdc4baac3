"""`qcompress count-params`: head sizes, quantum vs classical."""

from __future__ import annotations

import math
from typing import List, Optional

import typer

from qcompress.cli._common import command, print_json, print_table
from qcompress.cli.options import AsJson, MixingChoice, TrustRemoteCode, value


@command("count-params")
def count_params(
    in_dim: Optional[int] = typer.Option(
        None, "--in-dim", min=1,
        help="Input size (qubits = embedding dimensions). Default: the encoder's hidden size, or 768.",
    ),
    out_dims: List[int] = typer.Option(
        [384, 256, 128, 64], "--out-dim", min=1, metavar="<int>", help="Output size; repeat for several rows."
    ),
    encoder: Optional[str] = typer.Option(
        None, "--encoder", help="Also count this encoder's parameters (hub id or local folder; weights are not loaded, "
        "but the model is built on torch's meta device: without --encoder, count-params never imports torch)."
    ),
    mixing: MixingChoice = typer.Option(
        "none", "--mixing", help="Input mixing before the quantum head: its fitted numbers (none of them trained) are "
        "counted in their own column.",
    ),
    bits: Optional[int] = typer.Option(
        None, "--bits", min=1, max=8, help="Also the size of a stored vector as low-bit angle codes of this many bits "
        "per qubit (train --bits): ceil(out x bits / 8) bytes, against 4 x out for float32.",
    ),
    trust_remote_code: TrustRemoteCode = False,
    as_json: AsJson = False,
) -> None:
    """Compare head sizes: quantum head 12 x (k-1) x out vs classical Linear(in, out) + bias, per output size.

    k = ceil(in / out) is the number of qubit registers the quantum head folds into one (SPEC §3); the
    classical head has in x out + out parameters. Each row also gives the bytes of one stored vector: float32
    (4 x out), and with --bits the low-bit angle codes (ceil(out x bits / 8)). Example:

        qcompress count-params --in-dim 768 --out-dim 256 --out-dim 128 --json
        qcompress count-params --in-dim 384 --out-dim 256 --out-dim 128 --bits 2
    """
    encoder_params = None
    if encoder is not None:
        from qcompress.encoder import count_encoder_parameters

        encoder_params, hidden = count_encoder_parameters(encoder, trust_remote_code=trust_remote_code)
        in_dim = in_dim or hidden
    in_dim = 768 if in_dim is None else in_dim
    rows = [_row(in_dim, out_dim, value(mixing), bits) for out_dim in out_dims]
    if as_json:
        print_json({"in_dim": in_dim, "encoder": encoder, "encoder_parameters": encoder_params, "rows": rows})
        return
    _print_rows(rows, in_dim, encoder, encoder_params, value(mixing), bits)


def _row(in_dim: int, out_dim: int, mixing: str, bits: Optional[int]) -> dict:
    """One output size: both heads' parameters, the mixing's fitted numbers, the bytes of a stored vector."""
    from qcompress.heads import sizes  # arithmetic: no torch (only --encoder loads it, to build the encoder)

    quantum = sizes.quantum_head_num_parameters(in_dim, out_dim)
    classical = sizes.classical_head_num_parameters(in_dim, out_dim)
    return {
        "in_dim": in_dim,
        "out_dim": out_dim,
        "quantum_head": quantum,
        "classical_head": classical,
        "ratio": round(classical / quantum, 2) if quantum else None,
        "padded_qubits": -in_dim % out_dim,
        "mixing": mixing,
        "mixing_fitted": sizes.mixing_fitted_numbers(mixing, in_dim),
        "float32_bytes": 4 * out_dim,
        "bits": bits,
        "code_bytes": math.ceil(out_dim * bits / 8) if bits is not None else None,  # packed codes (SPEC §7)
    }


def _print_rows(rows: List[dict], in_dim: int, encoder: Optional[str], encoder_params: Optional[int], mixing: str,
                bits: Optional[int]) -> None:
    from rich.table import Table

    table = Table(title=f"Head parameters, {in_dim} -> out" + (f" (encoder {encoder})" if encoder else ""))
    for col in ("in -> out", "quantum head", "classical head", "classical / quantum", "float32 bytes"):
        table.add_column(col, justify="right")
    if bits is not None:
        table.add_column(f"{bits}-bit code bytes", justify="right")
    if mixing != "none":
        table.add_column(f"{mixing} mixing (fitted)", justify="right")
    if encoder_params is not None:
        table.add_column("encoder", justify="right")
    for row in rows:
        cells = [
            f"{row['in_dim']} -> {row['out_dim']}",
            f"{row['quantum_head']:,}",
            f"{row['classical_head']:,}",
            f"{row['ratio']}x" if row["ratio"] is not None else "-",
            f"{row['float32_bytes']:,}",
        ]
        if bits is not None:
            cells.append(f"{row['code_bytes']:,}")
        if mixing != "none":
            cells.append(f"{row['mixing_fitted']:,}")
        if encoder_params is not None:
            cells.append(f"{encoder_params:,}")
        table.add_row(*cells)
    print_table(table)
