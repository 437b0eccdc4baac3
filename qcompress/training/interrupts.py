"""Ctrl-C at a safe point: the parts of a training step that must not be cut in half hold SIGINT back.

A step's forward and backward passes change nothing a checkpoint saves but the random-number state (dropout),
which the loop snapshots and restores; its update (optimizer.step, which changes the weights one tensor at a
time, the step counter and the log row) runs inside `deferred_interrupts()`: a SIGINT that arrives there takes
effect when the update is complete. So whatever moment Ctrl-C lands in, the state is that of a completed step.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

__all__ = ["deferred_interrupts"]


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT back for the block, then deliver it as the handler in place before would have.

    Example:
        >>> # Ctrl-C as in a terminal (a process started in the background inherits SIGINT ignored):
        >>> outer = signal.signal(signal.SIGINT, signal.default_int_handler)
        >>> try:
        ...     with deferred_interrupts():
        ...         signal.raise_signal(signal.SIGINT)   # Ctrl-C: noted, not raised here
        ...         finished = True
        ... except KeyboardInterrupt:
        ...     print("interrupted after the block; finished:", finished)
        interrupted after the block; finished: True
        >>> _ = signal.signal(signal.SIGINT, outer)
    """
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        if callable(previous):
            previous(signal.SIGINT, None)  # Python's own handler raises KeyboardInterrupt
        elif previous == signal.SIG_DFL:
            signal.raise_signal(signal.SIGINT)  # as it would have been: the process ends
