"""Metrics to a JSONL file and TensorBoard (rank 0 only)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from duda.files import write_text


class MetricLogger:
    """Appends records to ``WORK_DIR/metrics.jsonl`` (and TensorBoard).

    With ``resume_step`` (a run continued from its checkpoint of that step) the records an
    interrupted attempt logged after that step are dropped first, and TensorBoard purges its
    events after it, so the resumed run's steps are logged once.
    """

    def __init__(
        self,
        work_dir: str | Path,
        enabled: bool = True,
        tensorboard: bool = True,
        resume_step: int | None = None,
    ) -> None:
        self.enabled = enabled
        self.path = Path(work_dir) / "metrics.jsonl"
        self._tb = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if resume_step is not None:
                drop_records_after(self.path, resume_step)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    purge = None if resume_step is None else resume_step + 1
                    self._tb = SummaryWriter(log_dir=str(Path(work_dir) / "tb"), purge_step=purge)
                except ImportError:  # tensorboard is optional for library users
                    self._tb = None

    def log(self, step: int, values: dict[str, Any], prefix: str = "train") -> None:
        if not self.enabled:
            return
        clean = {}
        for k, v in values.items():
            if hasattr(v, "item"):
                v = v.item()
            if isinstance(v, float) and not math.isfinite(v):
                v = str(v)
            clean[k] = v
        record = {"step": step, "split": prefix, "time": round(time.time(), 3), **clean}
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in clean.items():
                if isinstance(v, (int, float)):
                    self._tb.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def drop_records_after(path: str | Path, step: int) -> int:
    """Remove the records of steps after ``step`` (and a line cut short by a kill) from a
    metrics file, atomically; returns how many lines were dropped."""

    path = Path(path)
    if not path.is_file():
        return 0
    keep, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
            ok = int(rec["step"]) <= step
        except (ValueError, KeyError, TypeError):
            ok = False
        if ok:
            keep.append(line)
        elif line.strip():
            dropped += 1
    if dropped:
        write_text(path, "".join(line + "\n" for line in keep))
    return dropped
