"""`qcompress quantize`: a Parquet file of float32 angles -> a file of low-bit codes (qcompress.quantize)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from qcompress.cli._common import bar_on_first_use, check_output_file, codes_note, command, progress_bars, usage_error
from qcompress.cli.options import ModelDir, Revision


@command("quantize")
def quantize_command(
    input_path: Path = typer.Argument(
        ..., metavar="INPUT", help="Float32 angles from `qcompress compress` (a Parquet file or folder)."),
    bits: int = typer.Option(..., "--bits", min=1, max=8, help="Bits per qubit (1-8): ceil(dim*B/8) bytes a row."),
    output: Path = typer.Option(..., "-o", "--output", help="Parquet file of codes to write (atomically)."),
    model_dir: Optional[str] = typer.Option(
        None, "--model", help="The model that made INPUT (a folder or Hub id, checked against INPUT's weights digest): "
        "its own levels when it was trained with --bits B. Without: levels fitted on INPUT."),
    revision: Revision = None,
    force: bool = typer.Option(False, "--force", help="Replace an existing output file (else it is refused)."),
) -> None:
    """Code a file of float32 angles at B bits per qubit, without encoding the texts again.

    The levels are those `compress --bits B` would use: the --model's own when it was trained with --bits B, else
    levels fitted per qubit (Lloyd-Max) on the first 4,096 rows of INPUT; so quantizing the float32 file that
    `compress` wrote gives the file `compress --bits B` writes. The output keeps INPUT's metadata (model, role)
    and texts, with the levels that decode the codes and where they came from. Files of cosine vectors and files
    already coded (--uint8, --bits) are refused.

    Examples:

        qcompress quantize corpus.parquet --bits 4 -o corpus-4bit.parquet
        qcompress quantize corpus.parquet --bits 4 --model models/qbec-4bit -o corpus-4bit.parquet
        qcompress score queries.parquet corpus-4bit.parquet --top-k 100 -o run.trec
    """
    if output.resolve() == input_path.resolve():
        usage_error("-o names INPUT itself; write the codes to another file")
    check_output_file(output, "-o", "codes.parquet", force)
    from qcompress.formats import count_embedding_rows, read_embedding_metadata
    from qcompress.model import ModelSpec
    from qcompress.quantize import quantize

    if revision is not None and model_dir is None:
        usage_error("--revision goes with --model (a Hub id)")
    read_embedding_metadata(input_path)  # a bad INPUT fails before any model loads
    model = ModelSpec(model_dir=model_dir, revision=revision).load("cpu") if model_dir is not None else None
    with progress_bars() as start:
        done = quantize(input_path, output, bits, model=model,
                        on_rows=bar_on_first_use(start, "quantizing", count_embedding_rows(input_path)))
    codes_note(done.rows, done.codec, done.levels_source, output)
