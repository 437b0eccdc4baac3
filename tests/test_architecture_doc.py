"""docs/architecture.md names only files, folders and functions that exist, so the map cannot rot silently.

Read as text, nothing imported: every backticked path (`formats/texts.py`, `heads/`, `recipes/peers_*.py`,
`tests/test_cli_*.py`, `benchmarks/cli_startup.py`, `pyproject.toml`) must exist under qcompress/ or the repository
root, or in the package folder last named before it (`linear.py` after `heads/`); every file or folder of the
pipeline diagram somewhere under qcompress/; every backticked qcompress name (`corpus_codec`, `encoder.load_encoder`,
`QCompressModel.pool`, `qcompress.codes.topk`) must be defined in qcompress's source, a dotted one in the module or
class it names."""

from __future__ import annotations

import builtins
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "qcompress"
DOC = (ROOT / "docs" / "architecture.md").read_text()
SOURCES = {path: path.read_text() for path in PACKAGE.rglob("*.py")}
# Backticked words that are not qcompress names: placeholders, file names that qcompress writes, other packages'.
NOT_NAMES = {"qcompress.FIELD", "qcompress.json", "pytest", "SentenceTransformer.save", "push_to_hub",
             "pyarrow.parquet.ParquetWriter"}
PLACEHOLDER = re.compile(r"^(CACHE|OUT)\b")


def backticked() -> list[str]:
    return [t.strip() for t in re.findall(r"`([^`\n]+)`", DOC) if t.strip()]


def diagram_paths() -> list[str]:
    """The files (x.py) and folders (x/) of the fenced pipeline diagram."""
    blocks = re.findall(r"^```\n(.*?)^```", DOC, re.S | re.M)
    return [w for block in blocks for w in block.split() if re.fullmatch(r"[\w/]+\.py|\w+/", w)]


def is_path(token: str) -> bool:
    return re.fullmatch(r"[\w./*-]+(\.py|\.toml|/)", token) is not None and not PLACEHOLDER.match(token)


def path_exists(token: str, folder: str = "") -> bool:
    """`token` in qcompress/`folder`/, qcompress/ or the repository root (a glob pattern: any file it matches)."""
    return any(any(base.glob(token.rstrip("/"))) for base in (PACKAGE / folder, PACKAGE, ROOT))


def missing_paths(tokens: list[str]) -> list[str]:
    """The paths among `tokens` (in the doc's order) that do not exist, each read also in the package folder named
    last before it (`bench/`, then `methods/base.py`)."""
    folder, missing = "", []
    for token in filter(is_path, tokens):
        if not path_exists(token, folder):
            missing.append(token)
        elif "/" in token.rstrip("/") or token.endswith("/"):
            top = token.split("/")[0]
            folder = top if (PACKAGE / top).is_dir() else folder
    return missing


def defines(text: str, name: str) -> bool:
    """`name` defined (def, class, assignment, annotated field, attribute set on self) or listed for lazy
    re-export (a package's attach map, a module's __getattr__) in `text`."""
    n = re.escape(name)
    return re.search(rf"^\s*(def|class) {n}\b|^\s*(self\.)?{n}\s*(:[^=\n]*)?=|^\s*{n}:|[\"']{n}[\"']", text,
                     re.M) is not None


def module_file(dotted: list[str]) -> Path | None:
    """qcompress/a/b.py or qcompress/a/b/__init__.py for ["a", "b"]."""
    base = PACKAGE.joinpath(*dotted)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def name_problem(token: str) -> str | None:
    """Why a backticked name is not defined where it says, or None when it is (or is not a qcompress name)."""
    name = token.removesuffix("()")
    if not re.fullmatch(r"[A-Za-z_][\w.]*", name) or is_path(name) or token in NOT_NAMES or hasattr(builtins, name):
        return None
    parts = name.split(".")
    if parts[0] == "qcompress":
        parts = parts[1:]
        if not parts or module_file(parts) is not None:  # the package, or a module of it
            return None
    if len(parts) == 1:
        return None if any(defines(t, parts[0]) for t in SOURCES.values()) else f"`{token}`: defined nowhere"
    *owner, attribute = parts
    where = module_file(owner)
    if where is None:  # Class.attribute: the file that defines the class
        where = next((p for p, t in SOURCES.items() if re.search(rf"^class {owner[-1]}\b", t, re.M)), None)
    if where is None:
        return f"`{token}`: no module or class {'.'.join(owner)} in qcompress"
    return None if defines(SOURCES[where], attribute) else f"`{token}`: {where.relative_to(ROOT)} has no {attribute}"


def test_every_path_in_the_architecture_doc_exists():
    assert sum(map(is_path, backticked())) > 50  # the doc is read
    missing = missing_paths(backticked()) + [p for p in diagram_paths() if not any(PACKAGE.rglob(p.rstrip("/")))]
    assert not missing, f"docs/architecture.md names paths that do not exist: {sorted(set(missing))}"


def test_every_name_in_the_architecture_doc_is_defined():
    problems = sorted({p for t in backticked() if (p := name_problem(t)) is not None})
    assert not problems, "docs/architecture.md: " + "; ".join(problems)


def test_the_checks_can_fail():
    assert not path_exists("formats/no_such.py") and path_exists("heads/") and path_exists("recipes/peers_*.py")
    assert path_exists("tests/test_cli_*.py") and path_exists("codes.py", "search") and path_exists("none.py", "heads")
    assert missing_paths(["similarity/", "search.py", "none.py", "heads/", "none.py", "OUT.partial/"]) == \
        ["search.py", "none.py"]
    assert name_problem("encoder.load_encoder") is None and name_problem("QCompressModel.pool") is None
    assert name_problem("qcompress.codes.topk") is None and name_problem("no_such_function") is not None
    assert name_problem("errors.no_such_name") is not None and name_problem("NoSuchClass.pool") is not None
