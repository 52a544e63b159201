"""Logging: everything the library reports goes through the ``duda`` logger.

Library code never prints. The ``duda`` command attaches one handler (``setup``) that writes
plain messages to stdout through ``tqdm.write`` so that messages and a progress bar on stderr
never garble each other; ``--quiet`` shows warnings only, ``--verbose`` adds debug messages.
Progress bars are controlled separately (``--no-progress``).

In a notebook or your own script nothing is shown below WARNING unless you ask for it::

    import logging
    logging.basicConfig(level=logging.INFO)            # every library, or:
    logging.getLogger("duda").setLevel(logging.INFO)    # plus a handler of your own
    logging.getLogger("duda").setLevel(logging.ERROR)   # silence duda's warnings
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("duda")

QUIET, NORMAL, VERBOSE = logging.WARNING, logging.INFO, logging.DEBUG


class TqdmHandler(logging.StreamHandler):
    """Writes each record with ``tqdm.write`` (which redraws an active bar below it); without a
    ``stream``, to whatever ``sys.stdout`` is when the record comes (it may be replaced: a test's
    capture, a redirected notebook cell), never to a stream closed since."""

    def __init__(self, stream=None) -> None:
        super().__init__(stream if stream is not None else sys.stdout)
        self._follow_stdout = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            stream = sys.stdout if self._follow_stdout else self.stream
            tqdm.write(self.format(record), file=stream)
            stream.flush()
        except Exception:  # a closed stream, a formatting error: logging's own reporting
            self.handleError(record)


def setup(level: int = NORMAL, stream=None) -> logging.Handler:
    """Route the ``duda`` logger to ``stream`` (default stdout) at ``level``, replacing a handler
    installed by an earlier call; warnings and errors are prefixed with their level."""
    for h in list(logger.handlers):
        if getattr(h, "_duda_cli", False):
            logger.removeHandler(h)
    handler = TqdmHandler(stream)
    handler._duda_cli = True  # type: ignore[attr-defined]
    handler.setFormatter(_Formatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return handler


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.WARNING and not msg.startswith(("warning", "error")):
            msg = f"{record.levelname.lower()}: {msg}"
        return msg


def info(message: str) -> None:
    """The ``log=`` default of library functions: ``logger.info``, or ``logger.warning`` for a
    message that starts with "warning" (so that ``--quiet`` still shows it)."""
    logger.log(logging.WARNING if message.startswith("warning") else logging.INFO, message)
