"""Library code logs through the `duda` logger; the CLI's --quiet / --verbose set its level."""

import logging

import pytest

from duda import log
from duda.cli import main


@pytest.fixture(autouse=True)
def _restore_logger():
    level, handlers, propagate = log.logger.level, list(log.logger.handlers), log.logger.propagate
    yield
    log.logger.handlers[:] = handlers
    log.logger.setLevel(level)
    log.logger.propagate = propagate


def test_library_messages_are_silent_until_a_handler_asks_for_them(capsys, caplog):
    log.logger.handlers[:] = []
    log.logger.setLevel(logging.NOTSET)
    log.logger.propagate = True
    log.info("resuming run from step 3")  # what a library function logs by default
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing printed: a notebook user sees it only if they ask
    with caplog.at_level(logging.INFO, logger="duda"):
        log.info("resuming run from step 3")
        log.info("warning: the config differs")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "resuming run from step 3"),
        (logging.WARNING, "warning: the config differs"),
    ]


def test_quiet_keeps_warnings_and_verbose_adds_debug(capsys):
    log.setup(log.QUIET)
    log.info("an info line")
    log.info("warning: a warning line")
    log.logger.error("an error")
    out = capsys.readouterr().out
    assert "an info line" not in out and "warning: a warning line" in out and "error: an error" in out
    log.setup(log.VERBOSE)
    log.logger.debug("a debug line")
    assert "a debug line" in capsys.readouterr().out
    assert len([h for h in log.logger.handlers if getattr(h, "_duda_cli", False)]) == 1


@pytest.mark.parametrize("where", ["before", "after"])
def test_cli_quiet_flag_before_or_after_the_command(where, capsys):
    small = ["--names", "segformer_mit_tiny", "--size", "32", "32"]
    args = ["--quiet", "models", *small] if where == "before" else ["models", "--quiet", *small]
    assert main(args) == 0
    assert log.logger.level == logging.WARNING
    assert "segformer_mit_tiny" in capsys.readouterr().out  # the command's own output stays
    assert main(["models", "--verbose", *small]) == 0 and log.logger.level == logging.DEBUG
    assert main(["models", *small]) == 0 and log.logger.level == logging.INFO


def test_quiet_and_verbose_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as err:
        main(["models", "--quiet", "--verbose"])
    assert err.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_the_cli_handler_follows_stdout_when_it_is_replaced(monkeypatch):
    """A handler set up while one stdout was current keeps working after it is replaced and
    closed (pytest captures do this between tests): no "Logging error" report."""
    import io
    import logging

    from duda import log

    first = io.StringIO()
    monkeypatch.setattr("sys.stdout", first)
    handler = log.setup(log.NORMAL)
    errors = []
    monkeypatch.setattr(handler, "handleError", lambda record: errors.append(record))
    first.close()
    second = io.StringIO()
    monkeypatch.setattr("sys.stdout", second)
    try:
        log.info("after the swap")
    finally:
        logging.getLogger("duda").removeHandler(handler)
    assert second.getvalue() == "after the swap\n" and not errors
