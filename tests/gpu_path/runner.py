"""The child process of the gpu_path tests: load the emulated CUDA device (before torch), run the
cases of ``cases.py`` one after the other and write their results as JSON (after each case, so
that a crash keeps the results so far).

    python tests/gpu_path/runner.py LIBRARY RESULTS.json [CASE ...]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "engine")]  # emulator, cases; tinyrun


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    import emulator

    emu = emulator.load(Path(argv[0]))
    out = Path(argv[1])
    import torch

    torch.set_num_threads(1)
    import cases

    names = argv[2:] or list(cases.CASES)
    unknown = sorted(set(names) - set(cases.CASES))
    if unknown:
        print(f"unknown cases {unknown}; known: {sorted(cases.CASES)}", file=sys.stderr)
        return 2
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="duda-gpu-path-") as tmp:
        ctx = cases.Context(emu, Path(tmp))
        for name in names:
            torch.manual_seed(0)
            start = time.perf_counter()
            try:
                results[name] = {"ok": True, "data": cases.CASES[name](ctx) or {}}
            except Exception:
                results[name] = {"ok": False, "error": traceback.format_exc()}
            results[name]["seconds"] = round(time.perf_counter() - start, 2)
            out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
