"""Progress bars only where someone watches them: on a terminal, never in a redirected log.

tqdm redraws its bar with carriage returns; written to a file (``duda train ... > log``, a
scheduler's output file) every redraw stays in the file as one more ``\\r`` frame. Bars are
therefore drawn only when stderr is a terminal; messages go through ``print`` either way.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any


def is_terminal() -> bool:
    """Whether stderr (where tqdm draws) is an interactive terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def progress_bar(iterable: Iterable | None = None, enabled: bool = True, **kw: Any):
    """``tqdm(iterable, **kw)`` when ``enabled`` and stderr is a terminal, else a disabled bar
    (same interface, draws nothing)."""
    from tqdm import tqdm

    kw.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not (enabled and is_terminal()), **kw)
