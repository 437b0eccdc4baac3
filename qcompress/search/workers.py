"""How a search spreads its work: independent pieces on Python threads, each running torch single-threaded, and
temporaries of bounded size.

Why not torch's own parallelism: the searches are thousands of small torch ops, and OpenMP's threads spin-wait at
the end of each parallel op; when another process holds a core, every small op waits for a descheduled thread,
and a search slows by one or two orders of magnitude. Here no op is parallel: the parallelism is over independent
pieces of work (chunks of the corpus, pieces of pairs), so a busy core only slows the pieces it runs
(`benchmarks/search.py` times both conditions).
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

import torch

__all__ = ["search_workers", "DEFAULT_CHUNK_ELEMENTS"]

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_CHUNK_ELEMENTS = 1 << 22  # numbers per temporary, by default


@contextlib.contextmanager
def search_workers() -> Iterator[Callable[[Callable[[T], R], Iterable[T]], list[R]]]:
    """Yield `run(fn, items) -> [fn(item), ...]`, spread over `torch.get_num_threads()` Python threads, each of
    which runs torch single-threaded; the calling thread runs single-threaded too until the block ends.

    The setting is per thread (OpenMP and MKL keep it per thread) and restored on exit, so nothing else in the
    process changes (module docstring: why).

    Example:
        >>> with search_workers() as run:
        ...     run(lambda x: x * x, [1, 2, 3])
        [1, 4, 9]
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if threads == 1:
            yield lambda fn, items: [fn(item) for item in items]
            return
        with ThreadPoolExecutor(threads, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            yield lambda fn, items: list(pool.map(fn, items))
    finally:
        torch.set_num_threads(threads)
