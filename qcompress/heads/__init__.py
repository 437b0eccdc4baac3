"""Projection heads by name: the registry of head kinds ("none", "linear", "quantum").

Each head kind is one class in one file of this package (`base.HeadKind` lists what it owns: building its module,
projecting pooled encoder outputs, its parameter count, what it outputs (angles, vectors), its sentence-transformers
modules, its model-card description and its config checks). The names are known without importing torch (the
command line's choices); a kind's file is imported when it is first asked for. A head defined elsewhere (a plugin,
a test) joins with `register_head(cls)`.

Example:
    >>> HEAD_KINDS, get_head("quantum").default_similarity
    (('none', 'linear', 'quantum'), 'fidelity')
    >>> build_head("linear", 768, 256)
    ClassicalHead(
      (linear): Linear(in_features=768, out_features=256, bias=True)
    )
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Mapping

from qcompress._lazy import attach
from qcompress.errors import InputError
from qcompress.registry import Registry

if TYPE_CHECKING:
    from torch import nn

    from qcompress.heads.base import HeadKind

__all__ = ["HEAD_KINDS", "HEAD_REGISTRY", "DEFAULT_SIMILARITY", "HeadKind", "get_head", "register_head", "build_head",
           "ClassicalHead", "classical_head_num_parameters"]

# name -> the class that owns it; a new head is one line here (or `register_head` from outside).
HEAD_REGISTRY: Registry["HeadKind"] = Registry("head", {
    "none": "qcompress.heads.none:NoHeadKind",
    "linear": "qcompress.heads.linear:LinearHeadKind",
    "quantum": "qcompress.heads.quantum:QuantumHeadKind",
})
HEAD_KINDS = HEAD_REGISTRY.names()  # the built-in ones (the command line's --head choices)
get_head = HEAD_REGISTRY.get
register_head = HEAD_REGISTRY.register

__getattr__, __dir__ = attach(__name__, {"HeadKind": "base", "ClassicalHead": "linear",
                                         "classical_head_num_parameters": "sizes"})


def build_head(kind: str, in_dim: int, out_dim: int | None) -> "nn.Module | None":
    """A fresh head module of `kind` (None for "none"); a head that compresses needs `out_dim`."""
    head = get_head(kind)
    if not head.has_dim:
        return head.build(in_dim, in_dim)
    if out_dim is None:
        raise InputError(f"a {kind} head needs an output size (--dim)")
    return head.build(in_dim, out_dim)


class _DefaultSimilarity(Mapping[str, str]):
    """head -> its default similarity, as each head kind says (read-only; the earlier table's interface)."""

    def __getitem__(self, head: str) -> str:
        if head not in HEAD_REGISTRY:
            raise KeyError(head)
        return get_head(head).default_similarity

    def __iter__(self) -> Iterator[str]:
        return iter(HEAD_REGISTRY.names())

    def __len__(self) -> int:
        return len(HEAD_REGISTRY.names())


DEFAULT_SIMILARITY: Mapping[str, str] = _DefaultSimilarity()
