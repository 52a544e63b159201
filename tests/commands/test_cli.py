"""The command line as a whole: every command registers and answers --help, and building the
parser stays free of torch (the reason the commands import what they run inside functions)."""

import subprocess
import sys

import pytest

from duda.cli import COMMANDS, build_parser, main


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_answers_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: duda {command}" in capsys.readouterr().out


def test_building_the_parser_imports_no_torch():
    code = (
        "import sys; from duda.cli import build_parser; build_parser(); "
        "heavy = sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules); "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"`duda --help` imports {out.stdout.strip()}"


def test_an_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-command"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'no-such-command'" in capsys.readouterr().err
