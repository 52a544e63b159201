import os
import sys
from pathlib import Path

import pytest
import torch

# Tests mirror the packages (tests/<package>/test_<module>.py) and are imported by path
# (--import-mode=importlib), so two packages may each have a test_hrda.py; the shared helper
# modules are imported by name from these folders.
_HERE = Path(__file__).resolve().parent
for _folder in ("", "engine", "data", "inference", "methods"):
    if str(_HERE / _folder) not in sys.path:
        sys.path.insert(0, str(_HERE / _folder))

# Tests use tiny tensors: one intra-op thread is fastest and never stalls on a busy machine
# (two OpenMP threads on a loaded 2-core machine made tiny steps ten times slower).
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def mit_name():
    """Turns a MiT module or parameter name written in the transformers 5.x layout
    (``…encoder.stages.0.blocks.1.attention.q_proj.weight``) into the installed one: unchanged on
    5.x, the 4.x layout (``…encoder.encoder.block.0.1.attention.self.query.weight``) on 4.x."""
    import re

    from duda.models.mit import MiTArch, MiTBackbone
    from duda.models.pretrained import mit_stages_to_legacy

    tiny = MiTArch(embed_dims=(8, 8, 8, 8), depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))
    uses_stages = any(k.startswith("encoder.stages.") for k in MiTBackbone(tiny).state_dict())

    def convert(name: str) -> str:
        m = re.fullmatch(r"(.*?)encoder\.(stages\..+)", name)
        if uses_stages or not m:
            return name
        is_param = m[2].endswith((".weight", ".bias"))
        legacy = mit_stages_to_legacy(m[2] if is_param else m[2] + ".weight")
        return f"{m[1]}encoder.encoder.{legacy if is_param else legacy.removesuffix('.weight')}"

    return convert


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A tiny synthetic UDA benchmark (source in GTA layout, target in Cityscapes layout), for the
    tests that train (engine, methods, inference, the API)."""
    from duda.data.prepare import prepare_dataset
    from duda.data.synth import generate_benchmark

    root = tmp_path_factory.mktemp("synth")
    generate_benchmark(
        root, seed=0, size=(64, 128), n_source=12, n_target_train=8, n_target_val=3, domains=("real",)
    )
    prepare_dataset("gta", root / "source", progress=False, log=lambda _: None)
    prepare_dataset("cityscapes", root / "real", progress=False, log=lambda _: None)
    return root
