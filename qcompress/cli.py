"""The `qcompress` command line: thin wrappers over the library. Its --help text is the documentation.

Exit codes: 0 success, 1 bad input or a failed job (one line on stderr), 2 wrong usage, 130 interrupted.
Progress and messages go to stderr; stdout carries only results (tables, --json, runs, scores).
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Callable, List, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Compress text embeddings with a quantum-inspired projection head and compare them by fidelity "
    "(arXiv 2501.04591).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stdout = Console()
stderr = Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    """Print one line `qcompress: error: ...` on stderr and exit."""
    stderr.print(f"qcompress: error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def cli_errors(func: Callable) -> Callable:
    """Turn bad-input exceptions into one clear line and a non-zero exit; Ctrl-C into exit 130."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            stderr.print("qcompress: interrupted", highlight=False)
            raise typer.Exit(130)
        except (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, PermissionError) as err:
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            fail(message)

    return wrapper


def _version(value: bool) -> None:
    if value:
        from qcompress import __version__

        print(f"qcompress {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Compress text embeddings with a quantum-inspired head and compare them by fidelity (arXiv 2501.04591).

    Typical use: qcompress train --variant QBEC --output m/ ; qcompress compress corpus.jsonl --model m/ -o c.parquet ;
    qcompress evaluate --model m/ --dataset cranfield
    """


def print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=None, sort_keys=False) + "\n")
    sys.stdout.flush()


@app.command("count-params")
@cli_errors
def count_params(
    in_dim: Optional[int] = typer.Option(
        None, "--in-dim", help="Input size (qubits = embedding dimensions). Default: the encoder's hidden size, or 768."
    ),
    out_dims: List[int] = typer.Option(
        [384, 256, 128, 64], "--out-dim", help="Output size; repeat for several rows."
    ),
    encoder: Optional[str] = typer.Option(
        None, "--encoder", help="Also count this encoder's parameters (hub id or local folder; weights are not loaded)."
    ),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow code shipped with the encoder."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Compare head sizes: quantum head 12*(k-1)*out vs classical Linear(in, out)+bias, per output size.

    Example: qcompress count-params --in-dim 768 --out-dim 256 --out-dim 128 --json
    """
    from qcompress.heads import classical_head_num_parameters
    from qcompress.quantum import quantum_head_num_parameters

    encoder_params = None
    if encoder is not None:
        from qcompress.encoder import count_encoder_parameters

        encoder_params, hidden = count_encoder_parameters(encoder, trust_remote_code=trust_remote_code)
        in_dim = in_dim or hidden
    in_dim = 768 if in_dim is None else in_dim
    rows = []
    for out_dim in out_dims:
        quantum = quantum_head_num_parameters(in_dim, out_dim)
        classical = classical_head_num_parameters(in_dim, out_dim)
        rows.append(
            {
                "in_dim": in_dim,
                "out_dim": out_dim,
                "quantum_head": quantum,
                "classical_head": classical,
                "ratio": round(classical / quantum, 2) if quantum else None,
                "padded_qubits": -in_dim % out_dim,
            }
        )
    if as_json:
        print_json({"in_dim": in_dim, "encoder": encoder, "encoder_parameters": encoder_params, "rows": rows})
        return
    table = Table(title=f"Head parameters, {in_dim} -> out" + (f" (encoder {encoder})" if encoder else ""))
    for col in ("in -> out", "quantum head", "classical head", "classical / quantum"):
        table.add_column(col, justify="right")
    if encoder_params is not None:
        table.add_column("encoder", justify="right")
    for row in rows:
        cells = [
            f"{row['in_dim']} -> {row['out_dim']}",
            f"{row['quantum_head']:,}",
            f"{row['classical_head']:,}",
            f"{row['ratio']}x" if row["ratio"] is not None else "-",
        ]
        if encoder_params is not None:
            cells.append(f"{encoder_params:,}")
        table.add_row(*cells)
    stdout.print(table)


# --- train (issue 3) ---


# --- compress (issue 4) ---


# --- score (issue 4) ---


# --- evaluate (issue 4) ---


if __name__ == "__main__":  # pragma: no cover
    app()
