"""The GPU path proven without a GPU: training steps of every method, evaluation and prediction
on an emulated CUDA device (see cuda_emulator.cpp), host syncs per step counted and bounded.

The cases run in one child process per session (conftest.py); each is one test here.
"""

from __future__ import annotations

import emulator
import pytest
import torch
from cases import CASES

pytestmark = [pytest.mark.gpu_path, pytest.mark.slow]

#: target images of the synthetic benchmark (cases.Context.synth): DUDA's I'_c pass reads them all
TARGET_IMAGES = 2

# Host syncs a training step may make on a GPU (reads of device values by the host, blocking
# copies either way, operators whose output size depends on the data). What remains, and why:
#   finite check  1  trainer._check_finite reads all the losses at once
#   ClassMix      1  torch.unique of the batch's source classes (their number picks the half)
#   feature dist. 1  the mean over the thing-class cells (a boolean mask of the feature grid)
# DUDA's stage 2 (S alone, no feature distance): finite check and ClassMix. A stage-2 step that
# (re)computes I'_c adds 2 per target image (the meter's counts come to the host) and 1 for
# the counts after the all-reduce.
SELF_TRAINING = 3
DUDA_STAGE2 = 2
INCONSISTENCY_PASS = 2 * TARGET_IMAGES + 1
STEP_SYNCS = {
    "train_source_only": {0: 1, 1: 1},
    **{f"train_{m}": {0: SELF_TRAINING, 1: SELF_TRAINING} for m in ("daformer", "mic", "hrda", "mic_hrda")},
    **{
        f"train_duda_{m}": {0: SELF_TRAINING, 1: DUDA_STAGE2, 2: DUDA_STAGE2}
        for m in ("daformer", "mic", "mic_hrda", "multi_teacher", "heterogeneous")
    },
}


def test_the_cases_are_the_expected_ones():
    assert len(CASES) >= 12
    assert set(STEP_SYNCS) <= set(CASES)


@pytest.mark.parametrize("case", list(CASES))
def test_case_on_emulated_cuda(emulated_cases, case):
    result = emulated_cases.get(case)
    assert result["ok"], f"{case} failed on the emulated CUDA device:\n{result['error']}"


@pytest.mark.parametrize("case", list(STEP_SYNCS))
def test_host_syncs_per_training_step_are_bounded(emulated_cases, case):
    result = emulated_cases.get(case)
    assert result["ok"], f"{case} failed:\n{result['error']}"
    steps = {s["step"]: s for s in result["data"]["steps"]}
    assert set(steps) == set(STEP_SYNCS[case])
    for index, budget in STEP_SYNCS[case].items():
        step = steps[index]
        if "inconsistency" in step["events"]:
            budget += INCONSISTENCY_PASS
        listing = "\n".join(f"  {n} × {kind} {op} at {where}" for kind, op, where, n in step["sites"])
        assert step["total"] <= budget, (
            f"{case} step {index}: {step['total']} host syncs {step['syncs']}, budget {budget}:\n{listing}"
        )
        assert step["total"] >= 1  # the finite check reads the losses: the counter counts


def test_duda_recomputes_inconsistency_where_configured(emulated_cases):
    """I'_c is computed at the start of stage 2, and at every stage-2 step with refresh 1."""
    for case, expected in (("train_duda_daformer", [1]), ("train_duda_multi_teacher", [1, 2])):
        steps = emulated_cases.get(case)["data"]["steps"]
        assert [s["step"] for s in steps if "inconsistency" in s["events"]] == expected, case


def test_host_sync_table(emulated_cases):
    """The host syncs of each method's steps, printed (``pytest -s`` shows the table)."""
    rows = []
    for case in STEP_SYNCS:
        result = emulated_cases.get(case)
        if result["ok"]:
            for s in result["data"]["steps"]:
                kinds = ", ".join(f"{k} {v}" for k, v in s["syncs"].items() if v)
                rows.append(f"{case:28s} step {s['step']}  {s['total']:3d}  {kinds}")
    print("\nhost syncs per emulated training step:\n" + "\n".join(rows))
    assert len(rows) == sum(len(steps) for steps in STEP_SYNCS.values())


def test_emulator_does_not_leak_into_this_process(emulated_cases):
    """The cases ran in a child process: this one still has torch's CPU build as it was."""
    assert emulated_cases.results, emulated_cases.log
    assert not torch.cuda.is_available()
    assert not hasattr(torch._C, "_cuda_getDeviceCount")
    with pytest.raises((RuntimeError, AssertionError)):
        torch.zeros(1, device="cuda")


def test_missing_compiler_gives_a_reason(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-c++-compiler")
    reason = emulator.missing_toolchain()
    assert reason is not None and "no-such-c++-compiler" in reason
