"""A measurement in a child process with a time budget, for the bench scripts' reference
solvers: fresh (one case's memory does not slow the next) and stopped when it runs out."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable
from typing import Any


def in_child(target: Callable[..., None], args: tuple[Any, ...], budget: float) -> Any:
    """``target(*args, queue)`` in a forked child: what it put on the queue, or None if it was
    not done within ``budget`` seconds."""
    ctx = mp.get_context("fork")
    out: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, out))
    proc.start()
    proc.join(budget)
    if proc.is_alive():
        proc.terminate()
        proc.join()
        return None
    return out.get()
