"""`qcompress push`: a model folder -> a Hugging Face Hub repository (qcompress.push)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from qcompress.cli._common import command, note, print_json


@command("push")
def push_command(
    model: Path = typer.Argument(
        ..., metavar="MODEL", help="A model folder: what `qcompress train` wrote, a head-only folder (its encoder is "
        "added), or a folder that sentence-transformers saved for a qcompress model."),
    repo_id: str = typer.Argument(..., metavar="REPO_ID", help="The Hub repository, ORG/NAME (created if missing)."),
    private: bool = typer.Option(False, "--private", help="Create the repository private (an existing one keeps "
                                 "its visibility)."),
    revision: Optional[str] = typer.Option(
        None, "--revision", "--branch", help="The branch to push to (created from main if missing). Default: main."),
    message: Optional[str] = typer.Option(None, "-m", "--message", help="The commit message."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the files that would be uploaded (JSON: path -> "
                                 "bytes) and upload nothing."),
) -> None:
    """Publish a model folder on the Hugging Face Hub, as one commit that qcompress (`--model REPO_ID`) and
    sentence-transformers load by the repository's id.

    The repository gets the folder's files (hidden ones left out) with its qcompress.json (rebuilt from the
    sentence-transformers files of a folder that sentence-transformers saved) and a model card naming REPO_ID
    (a card of your own is kept). Only safetensors weights: a folder holding pickles or code is refused. Log in
    first (`hf auth login`, or HF_TOKEN); offline (HF_HUB_OFFLINE=1, no network) nothing is sent.

    Examples:

        qcompress push models/qbfec your-name/qbfec-minilm
        qcompress push models/qbfec your-name/qbfec-minilm --branch v2 --private
        qcompress push models/qbfec your-name/qbfec-minilm --dry-run
    """
    from qcompress.push import push, push_plan

    if dry_run:
        with push_plan(model, repo_id) as plan:
            print_json({path: plan.size(path) for path in sorted(plan.files)})
        return
    url = push(model, repo_id, private=private, revision=revision, message=message)
    note(f"pushed {model} to {repo_id}" + (f" (branch {revision})" if revision else ""))
    print(url)
