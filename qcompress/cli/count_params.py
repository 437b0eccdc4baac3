"""`qcompress count-params`: head sizes, quantum vs classical."""

from __future__ import annotations

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
    trust_remote_code: TrustRemoteCode = False,
    as_json: AsJson = False,
) -> None:
    """Compare head sizes: quantum head 12 x (k-1) x out vs classical Linear(in, out) + bias, per output size.

    k = ceil(in / out) is the number of qubit registers the quantum head folds into one (SPEC §3); the
    classical head has in x out + out parameters. Example:

        qcompress count-params --in-dim 768 --out-dim 256 --out-dim 128 --json
    """
    from rich.table import Table

    from qcompress.heads import sizes  # arithmetic: no torch (only --encoder loads it, to build the encoder)

    encoder_params = None
    if encoder is not None:
        from qcompress.encoder import count_encoder_parameters

        encoder_params, hidden = count_encoder_parameters(encoder, trust_remote_code=trust_remote_code)
        in_dim = in_dim or hidden
    in_dim = 768 if in_dim is None else in_dim
    mixing = value(mixing)
    fitted = sizes.mixing_fitted_numbers(mixing, in_dim)
    rows = []
    for out_dim in out_dims:
        quantum = sizes.quantum_head_num_parameters(in_dim, out_dim)
        classical = sizes.classical_head_num_parameters(in_dim, out_dim)
        rows.append(
            {
                "in_dim": in_dim,
                "out_dim": out_dim,
                "quantum_head": quantum,
                "classical_head": classical,
                "ratio": round(classical / quantum, 2) if quantum else None,
                "padded_qubits": -in_dim % out_dim,
                "mixing": mixing,
                "mixing_fitted": fitted,
            }
        )
    if as_json:
        print_json({"in_dim": in_dim, "encoder": encoder, "encoder_parameters": encoder_params, "rows": rows})
        return
    table = Table(title=f"Head parameters, {in_dim} -> out" + (f" (encoder {encoder})" if encoder else ""))
    for col in ("in -> out", "quantum head", "classical head", "classical / quantum"):
        table.add_column(col, justify="right")
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
        ]
        if mixing != "none":
            cells.append(f"{fitted:,}")
        if encoder_params is not None:
            cells.append(f"{encoder_params:,}")
        table.add_row(*cells)
    print_table(table)
