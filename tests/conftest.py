import os

import pytest
import torch

# Tests use tiny tensors: one intra-op thread is fastest and never stalls on a busy machine
# (two OpenMP threads on a loaded 2-core machine made tiny steps ten times slower).
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
