"""The emulated CUDA device, built once per session and used in one child process.

The cases (``cases.py``) run in a child process (``runner.py``) that loads the emulator before
torch: loading it makes CUDA available to torch for good, so it never happens in this pytest
process and the rest of the suite sees the same torch as always. Without a C++ compiler (or
ninja) the gpu_path tests are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import emulator  # noqa: E402

#: seconds the child may take for all the cases (they take well under a minute)
CHILD_TIMEOUT = 900


@dataclass
class CaseResults:
    results: dict[str, dict]
    returncode: int
    log: str  # the end of the child's output

    def get(self, name: str) -> dict:
        if name not in self.results:
            raise AssertionError(
                f"the emulated-CUDA child did not report case {name!r} (exit {self.returncode}):\n{self.log}"
            )
        return self.results[name]


@pytest.fixture(scope="session")
def emulated_cases(tmp_path_factory) -> CaseResults:
    """Every case of cases.py, run on the emulated CUDA device (built or found up to date first)."""
    reason = emulator.missing_toolchain()
    if reason:
        pytest.skip(reason)
    library = emulator.build_in_child(emulator.default_build_dir())
    out = tmp_path_factory.mktemp("gpu_path") / "results.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(
            [sys.executable, str(HERE / "runner.py"), str(library), str(out)],
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
            env=env,
        )
        code, log = proc.returncode, (proc.stdout + proc.stderr)[-6000:]
    except subprocess.TimeoutExpired as exc:
        code, log = (
            -1,
            f"timed out after {CHILD_TIMEOUT} s\n{str(exc.stdout)[-3000:]}\n{str(exc.stderr)[-3000:]}",
        )
    results = json.loads(out.read_text()) if out.is_file() else {}
    return CaseResults(results, code, log)
