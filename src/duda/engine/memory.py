"""Predicted peak GPU memory of a training step (``duda plan``), computed without a GPU.

How. The config's method is built (every network it holds), each AdamW gets the state its
first step leaves (its two moments), and a steady-state training step (step 1: EMA update,
AdamW state present) is run as the trainer runs it (learning rate,
``zero_grad(set_to_none=True)``, ``method.train_step``, AdamW ``step``). The tensors are *fake*
(``torch._subclasses.fake_tensor.FakeTensorMode``): shapes, dtypes and storage sizes without
data, so MiT-B5 on 1024×1024 crops allocates nothing and takes seconds. A dispatch mode sees
every operator and keeps a ledger of the live storages: a storage enters when an operator first
returns it and leaves when it is freed (a ``weakref.finalize`` on the storage), each rounded up
to the CUDA caching allocator's 512-byte granularity. The highest total is the prediction of
``torch.cuda.max_memory_allocated()``; at that moment each live byte is attributed to

- ``weights`` / ``buffers`` of each network (trained, EMA, frozen: all are on the GPU),
- ``grads`` of each trained network (marked when autograd accumulates them),
- ``adamw``: AdamW's two fp32 moments per trained parameter (its step counters live on the host),
- ``activations`` of each network: what its forward passes left alive (tensors saved for the
  backward pass and outputs still referenced), or, when the peak is inside a forward, its
  temporaries,
- ``backward``: gradients of activations and other temporaries of the backward passes,
- ``optimizer``: temporaries of AdamW's step (the ``foreach`` implementation, as on CUDA),
- ``batch``: the step's input crops and labels, ``step``: everything else the step computes
  (augmentation, pseudo-labels, masks, losses).

The step needs some values: random draws decide whether an augmentation is applied, ClassMix
picks the classes present in the labels, the ImageNet feature distance selects cells by label.
So the labels and whatever is computed from labels and random draws alone are *real* (small CPU
tensors), and only what depends on network weights is fake: an operator whose inputs are all
real runs for real, one with a fake input runs fake (a boolean mask given by real labels is
turned into its real indices first). A step that needs the value of a network output (an
``.item()`` on a loss to decide what to do) cannot be planned, and is refused with the operator.

Not counted (``docs/memory.md``): the CUDA context, cuDNN / cuBLAS workspaces, and what the caching
allocator reserves beyond what it hands out (fragmentation); :data:`CUDA_CONTEXT_GIB` and
:data:`ALLOCATOR_RESERVE` add a fixed allowance for them when a budget is checked
(:func:`fits`). The device is the CPU's: the operators' saved tensors are those of PyTorch's CPU
kernels, which save what the CUDA ones do for the operators of these networks
(``scaled_dot_product_attention`` included: output and log-sum-exp). Under ``train.bf16`` the CPU's
autocast lists apply, with CUDA's float32 rule emulated for layer and group norms
(:func:`_cuda_autocast_norms`); the losses and softmaxes of the step are computed in float32 by
the code itself.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensor,
    FakeTensorMode,
)
from torch.nn.modules import module as module_mod
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_leaves

from duda.config import ExperimentConfig
from duda.data.labels import CITYSCAPES, label_space_from_file
from duda.engine.optim import build_optimizer, set_lr, span_lr_factor
from duda.engine.trainer import step_seed
from duda.errors import DudaError
from duda.methods import Method, StepContext, build_method, load_config, network_specs
from duda.methods.base import to_device
from duda.methods.sections import DETAIL_CROP_KEY, FEATURE_DISTANCE_OFF
from duda.models.factory import recipe
from duda.models.mit import MiTBackbone

#: The caching allocator hands out blocks in multiples of this many bytes.
ALLOC_GRANULARITY = 512
#: Allowance for what ``max_memory_allocated`` does not count, used when checking a budget: the
#: CUDA context and kernels (0.3-0.6 GiB on recent GPUs with lazy module loading)...
CUDA_CONTEXT_GIB = 0.5
#: ... and the allocator's reserve beyond the allocated peak (blocks rounded up within 2 MiB /
#: 20 MiB segments, fragmentation), as a share of the peak. Chosen a priori, not fitted.
ALLOCATOR_RESERVE = 0.10
GIB = 1024**3

CATEGORIES = ("weights", "buffers", "grads", "adamw", "activations", "backward", "optimizer", "batch", "step")


class PlanError(DudaError):
    """A config whose training step cannot be planned on fake tensors."""


# --------------------------------------------------------------------------- results
@dataclass
class NetworkMemory:
    """One network of the method: its persistent bytes and what its forward passes hold."""

    name: str
    role: str  # train | ema | frozen (declared), held (another module the method holds)
    params: int  # number of parameters
    weights: int  # bytes of parameters and buffers
    grads: int  # bytes of its gradients after the step's backward passes (trained networks)
    adamw: int  # bytes of its AdamW moments (trained networks)
    activations_at_peak: int  # bytes its forward passes hold at the peak
    activations_max: int  # the most its forward passes held at any moment of the step
    checkpointing: bool = False

    @property
    def persistent(self) -> int:
        return self.weights + self.grads + self.adamw


@dataclass
class MemoryPlan:
    """The predicted peak of one training step of a config, and where its bytes are."""

    config: str
    method: str
    overrides: list[str]
    batch_size: int
    crop_size: tuple[int, int]
    bf16: bool
    networks: list[NetworkMemory]
    peak: int  # predicted torch.cuda.max_memory_allocated() of a step, bytes
    breakdown: dict[str, int]  # category -> bytes at the peak (sum = peak)
    peak_phase: str  # where in the step the peak falls
    note: str = ""

    @property
    def peak_gib(self) -> float:
        return self.peak / GIB

    def required_gib(self) -> float:
        """Memory the GPU must have: the peak plus the allowance of :func:`required_bytes`."""
        return required_bytes(self.peak) / GIB

    def network(self, name: str) -> NetworkMemory:
        for net in self.networks:
            if net.name == name:
                return net
        raise KeyError(name)

    @property
    def activations(self) -> int:
        """Bytes held by the networks' forward passes at the peak."""
        return self.breakdown.get("activations", 0)


def required_bytes(peak: int) -> int:
    """The GPU memory a step of allocated peak ``peak`` needs: plus the allocator's reserve
    (:data:`ALLOCATOR_RESERVE`) and the CUDA context (:data:`CUDA_CONTEXT_GIB`)."""
    return int(peak * (1 + ALLOCATOR_RESERVE) + CUDA_CONTEXT_GIB * GIB)


def fits(plan: MemoryPlan, budget_gib: float) -> bool:
    return plan.required_gib() <= budget_gib


def alloc_size(nbytes: int) -> int:
    """``nbytes`` rounded up to the allocator's granularity (0 stays 0)."""
    return -(-int(nbytes) // ALLOC_GRANULARITY) * ALLOC_GRANULARITY


# --------------------------------------------------------------------------- the ledger
@dataclass
class _Record:
    nbytes: int
    key: tuple[str, str]  # (category, network or "")
    alive: bool = True


class _Ledger:
    """Live storages, their bytes by (category, network), the running total and its peak."""

    def __init__(self) -> None:
        self.live: dict[int, _Record] = {}
        self.sums: dict[tuple[str, str], int] = defaultdict(int)
        self.max_sums: dict[tuple[str, str], int] = defaultdict(int)
        self.total = 0
        self.peak = 0
        self.peak_sums: dict[tuple[str, str], int] = {}
        self.peak_phase = ""
        self.phase: Callable[[], str] = lambda: "set-up"
        self._finalizers: list[weakref.finalize] = []

    def add(self, storage, key: tuple[str, str]) -> None:
        sid = id(storage)
        if sid in self.live:
            return
        record = _Record(alloc_size(storage.nbytes()), key)
        self.live[sid] = record
        self._finalizers.append(weakref.finalize(storage, self._free, sid, record))
        self._change(key, record.nbytes)

    def relabel(self, storage, key: tuple[str, str]) -> None:
        record = self.live.get(id(storage))
        if record is not None and record.key != key:
            self._change(record.key, -record.nbytes)
            record.key = key
            self._change(key, record.nbytes)

    def forget(self, storage) -> None:
        """Stop counting ``storage`` (a host tensor, e.g. an optimizer's step counter)."""
        record = self.live.pop(id(storage), None)
        if record is not None:
            record.alive = False
            self._change(record.key, -record.nbytes)

    def _free(self, sid: int, record: _Record) -> None:
        if not record.alive:
            return
        record.alive = False
        if self.live.get(sid) is record:
            del self.live[sid]
        self._change(record.key, -record.nbytes)

    def _change(self, key: tuple[str, str], delta: int) -> None:
        self.sums[key] += delta
        self.total += delta
        if delta > 0:
            if self.sums[key] > self.max_sums[key]:
                self.max_sums[key] = self.sums[key]
            if self.total > self.peak:
                self.peak = self.total
                self.peak_sums = {k: v for k, v in self.sums.items() if v}
                self.peak_phase = self.phase()

    def reset_peak(self) -> None:
        self.peak = self.total
        self.peak_sums = {k: v for k, v in self.sums.items() if v}
        self.peak_phase = self.phase()
        self.max_sums = defaultdict(int, self.sums)

    def close(self) -> None:
        for fin in self._finalizers:
            fin.detach()
        self._finalizers.clear()


def _storages(out) -> Iterator:

    for leaf in tree_leaves(out):
        if isinstance(leaf, torch.Tensor):
            yield leaf.untyped_storage()


# --------------------------------------------------------------------------- execution
class _Executor:
    """The dispatch mode of a planned step: real where all inputs are real, fake otherwise; every
    new storage into the ledger, labelled by where the step is (network forward, backward, ...)."""

    def __init__(self, ledger: _Ledger, owner: dict[int, str]) -> None:
        self.ledger = ledger
        self.owner = owner  # id(module) -> network name
        self.stack: list[str] = []
        self.last_forward = ""
        self.where = "step"  # "step" or "optimizer:<network>"
        ledger.phase = self.phase

    # where the step is
    def origin(self) -> tuple[str, str]:
        if torch._C._current_graph_task_id() != -1:
            return ("backward", "")
        if self.stack:
            return ("activations", self.stack[-1])
        if self.where.startswith("optimizer"):
            return ("optimizer", "")
        return ("step", "")

    def phase(self) -> str:
        if torch._C._current_graph_task_id() != -1:
            return f"backward (after a forward of {self.last_forward or '?'})"
        if self.stack:
            grad = "" if torch.is_grad_enabled() else ", no grad"
            return f"forward of {self.stack[-1]}{grad}"
        if self.where.startswith("optimizer"):
            return f"AdamW step of {self.where.split(':', 1)[1]}"
        return "step code (augmentation, pseudo-labels, losses)"

    def pre_hook(self, module, args) -> None:
        name = self.owner.get(id(module))
        if name is not None:
            self.stack.append(name)
            self.last_forward = name

    def post_hook(self, module, args, output) -> None:
        if self.owner.get(id(module)) is not None and self.stack:
            self.stack.pop()

    @contextlib.contextmanager
    def hooks(self):

        pre = module_mod.register_module_forward_pre_hook(self.pre_hook)
        post = module_mod.register_module_forward_hook(self.post_hook, always_call=True)
        try:
            yield
        finally:
            pre.remove()
            post.remove()

    def mode(self):

        executor = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = executor.run(func, args, kwargs or {})
                for storage in _storages(out):
                    executor.ledger.add(storage, executor.origin())
                return out

        return _Mode()

    def run(self, func, args, kwargs):

        tensors = [x for x in tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor)]
        if any(isinstance(t, FakeTensor) for t in tensors):
            if func in _index_ops():
                args = (args[0], _concrete_indices(args[1]), *args[2:])
            return _fake_call(func, args, kwargs)
        return _real_call(func, args, kwargs)  # real inputs only, or none (a factory)


def _index_ops() -> tuple:
    aten = torch.ops.aten
    return (aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default)


def _concrete_indices(indices):
    """Real boolean masks among ``indices`` replaced by their real integer indices (so the
    result's shape is known); fake masks stay (and fail, naming the operator)."""

    out = []
    for index in indices:
        if (
            isinstance(index, torch.Tensor)
            and not isinstance(index, FakeTensor)
            and index.dtype in (torch.bool, torch.uint8)
        ):
            with _no_modes():
                out.extend(index.nonzero().unbind(1))
        else:
            out.append(index)
    return out


@contextlib.contextmanager
def _no_modes():

    with _disable_current_modes():
        yield


def _real_call(func, args, kwargs):
    with _no_modes():
        return func(*args, **kwargs)


def _fake_call(func, args, kwargs):

    try:
        return func(*args, **kwargs)
    except (DataDependentOutputException, DynamicOutputShapeException) as exc:
        raise PlanError(
            f"the step needs the value of a network output ({func}), which the fake tensors of the "
            f"estimate do not have ({type(exc).__name__})"
        ) from None


@contextlib.contextmanager
def _cuda_autocast_norms():
    """Under CPU autocast, give layer and group norms a float32 input, as CUDA's autocast does
    (it runs them in float32; CPU autocast leaves them in the input's bfloat16). A module hook,
    so that recomputation under activation checkpointing does the same."""

    def pre_hook(module, args):
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm)) and torch.is_autocast_enabled("cpu") and args:
            x = args[0]
            if isinstance(x, torch.Tensor) and x.dtype in (torch.bfloat16, torch.float16):
                return (x.float(), *args[1:])
        return None

    handle = module_mod.register_module_forward_pre_hook(pre_hook)
    try:
        yield
    finally:
        handle.remove()


# --------------------------------------------------------------------------- the plan
def held_networks(method) -> dict[str, nn.Module]:
    """Every network ``method`` holds: its declared ``networks`` first, then any other module
    among its attributes (frozen teachers read from files, say), named by the attribute, and
    those of a method it holds (DUDA's base method)."""

    found: dict[str, nn.Module] = dict(method.networks)
    seen = {id(m) for net in found.values() for m in net.modules()}

    def visit(value, name: str, depth: int) -> None:
        if isinstance(value, nn.Module):
            if id(value) not in seen:
                found[name] = value
                seen.update(id(m) for m in value.modules())
        elif isinstance(value, Method) and depth < 3:
            for n, net in value.networks.items():
                visit(net, f"{name}.{n}", depth + 1)
            for attr, v in vars(value).items():
                if not attr.startswith("_"):
                    visit(v, f"{name}.{attr}", depth + 1)
        elif isinstance(value, (list, tuple)) and depth < 3:
            for i, v in enumerate(value):
                visit(v, f"{name}[{i}]", depth + 1)
        elif isinstance(value, dict) and depth < 3:
            for k, v in value.items():
                visit(v, f"{name}[{k}]", depth + 1)

    for attr, value in vars(method).items():
        if not attr.startswith("_") and attr != "networks":  # _forward: wrappers of networks
            visit(value, attr, 0)
    return found


def _to_fake_cpu(method, networks: dict[str, nn.Module], fake_mode) -> None:
    """Every parameter and buffer of ``networks`` (built on the meta device, where building and
    deep-copying cost nothing) replaced by a fake CPU tensor of its shape, and the method (with
    any method it holds) told that its device is the CPU."""

    convert = fake_mode.fake_tensor_converter.from_meta_and_device
    cpu = torch.device("cpu")
    done: dict[int, torch.Tensor] = {}  # id of a network tensor (alive in its module) -> its fake

    def fake(t: torch.Tensor) -> torch.Tensor:
        if t.device.type != "meta":
            raise PlanError(f"a network tensor of shape {tuple(t.shape)} was not built on the meta device")
        return convert(fake_mode, t.detach(), cpu)

    modules = {id(m): m for net in networks.values() for m in net.modules()}
    for module in modules.values():
        for name, p in list(module._parameters.items()):
            if p is not None:
                if id(p) not in done:
                    done[id(p)] = nn.Parameter(fake(p), requires_grad=p.requires_grad)
                module._parameters[name] = done[id(p)]
        for name, b in list(module._buffers.items()):
            if b is not None:
                if id(b) not in done:
                    done[id(b)] = fake(b)
                module._buffers[name] = done[id(b)]
    for obj in (method, *(v for v in vars(method).values() if isinstance(v, Method))):
        obj.device = cpu


def config_num_classes(cfg: ExperimentConfig) -> int:
    """The number of classes of ``cfg``'s source dataset, without reading its images: the
    Cityscapes 19 of every built-in reader, a folder dataset's class file otherwise."""

    src = cfg.data.source
    if src is None or src.type != "folder":
        return CITYSCAPES.num_classes
    classes_file = src.classes_file
    if classes_file is None:
        root = Path(src.root)
        found = [root / n for n in ("classes.yaml", "classes.yml", "classes.json") if (root / n).is_file()]
        classes_file = str(found[0]) if found else None
    return label_space_from_file(classes_file)[0].num_classes if classes_file else CITYSCAPES.num_classes


def _planning_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """A copy of ``cfg`` whose declared networks start from random weights instead of their
    ImageNet files (the weights' values do not matter; files other than those a method reads
    itself, such as trained teachers, are not read)."""

    cfg = copy.deepcopy(cfg)
    for spec in network_specs(cfg).values():
        spec.config.pretrained = None
    cfg.train.compile = False
    return cfg


def planned_step(spans: dict) -> int:
    """The step planned: step 1 (the EMA is updated, AdamW has its state), or step 0 where
    fewer networks train at step 1 (a span that ends after one step)."""

    def active(step: int) -> int:
        return sum(s.start <= step < s.end for s in spans.values())

    return 1 if active(1) >= active(0) else 0


def _fake_batch(cfg: ExperimentConfig, num_classes: int, fake_mode, gen: torch.Generator) -> dict:
    """A batch as the loader gives it: fake images, real labels (every class present, some
    ignored pixels) and a real target validity map."""
    b = cfg.data.batch_size
    h, w = cfg.data.crop_size
    labels = torch.randint(0, num_classes, (b, h, w), generator=gen)
    labels[:, : max(1, h // 16)] = 255
    batch = {"src_gt": labels, "tgt_gt": torch.full((b, h, w), 255, dtype=torch.int64)}
    batch["tgt_valid"] = torch.ones(b, h, w)
    with fake_mode:
        batch["src_img"] = torch.empty(b, 3, h, w)
        batch["tgt_img"] = torch.empty(b, 3, h, w)
    return batch


def plan_config(
    path: str,
    overrides: list[str] | None = None,
    *,
    configure: Callable[[nn.Module, str], None] | None = None,
) -> MemoryPlan:
    """The memory plan of the config file ``path`` with ``--set`` ``overrides``."""
    cfg = load_config(path, list(overrides or []))
    plan = plan_memory(cfg, configure=configure)
    plan.config, plan.overrides = path, list(overrides or [])
    return plan


def plan_memory(
    cfg: ExperimentConfig, *, configure: Callable[[nn.Module, str], None] | None = None
) -> MemoryPlan:
    """Predict the peak GPU memory of a training step of ``cfg`` (see the module docstring).

    ``configure(network, name)``, when given, is called on every network after it is built
    (e.g. the benchmark's reference-like attention)."""
    num_classes = config_num_classes(cfg)
    pcfg = _planning_config(cfg)
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    ledger = _Ledger()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fake tensors warn about data pointers when deep-copied
        method, networks, optimizers = _fake_method(pcfg, num_classes, fake_mode, configure)
        roles = {name: spec.role for name, spec in method.network_specs(pcfg).items()}
        spans = method.spans()
        owner, param_net = _owners(networks)
        _ledger_weights(networks, ledger)
        gen = torch.Generator().manual_seed(pcfg.train.seed)
        batch = _fake_batch(pcfg, num_classes, fake_mode, gen)
        batch = to_device(batch, torch.device("cpu"), pcfg.train.channels_last)
        for storage in _storages(batch):
            ledger.add(storage, ("batch", ""))
        grad_hooks = _grad_hooks(method, spans, param_net, ledger)
        executor = _Executor(ledger, owner)
        step = planned_step(spans)
        method.on_train_start(step)
        for name in spans:
            method.networks[name].train()
        try:
            with contextlib.ExitStack() as stack:
                stack.enter_context(fake_mode)
                stack.enter_context(executor.mode())
                stack.enter_context(executor.hooks())
                if pcfg.train.bf16:
                    stack.enter_context(_cuda_autocast_norms())
                _init_optimizer_state(optimizers, executor, ledger)
                ledger.reset_peak()
                _run_step(method, optimizers, spans, pcfg, step, batch, executor, ledger)
        finally:
            for handle in grad_hooks:
                handle.remove()
            ledger.close()
        return _plan_of(cfg, ledger, networks, roles, spans, step)


def _fake_method(
    pcfg: ExperimentConfig, num_classes: int, fake_mode, configure: Callable[[nn.Module, str], None] | None
) -> tuple[Method, dict[str, nn.Module], dict]:
    """The method of ``pcfg`` with fake CPU tensors, every network it holds (``configure``d) and
    an AdamW per trained network, as CUDA would step it."""
    with torch.device("meta"):
        method = build_method(pcfg, num_classes, torch.device("meta"))
    networks = held_networks(method)
    _to_fake_cpu(method, networks, fake_mode)
    if configure is not None:
        for name, net in networks.items():
            configure(net, name)
    optimizers = {}
    with fake_mode:
        for name in method.spans():
            opt = build_optimizer(
                method.networks[name],
                lr=pcfg.optim.lr,
                weight_decay=pcfg.optim.weight_decay,
                head_lr_mult=pcfg.optim.head_lr_mult,
                betas=tuple(pcfg.optim.betas),
            )
            for group in opt.param_groups:
                group["foreach"] = True  # what torch picks for CUDA parameters
            optimizers[name] = opt
    return method, networks, optimizers


def _owners(networks: dict[str, nn.Module]) -> tuple[dict[int, str], dict[int, str]]:
    """The network (first in order) of each module and of each parameter, by id."""
    owner: dict[int, str] = {}
    param_net: dict[int, str] = {}
    for name, net in networks.items():
        for m in net.modules():
            owner.setdefault(id(m), name)
        for p in net.parameters():
            param_net.setdefault(id(p), name)
    return owner, param_net


def _ledger_weights(networks: dict[str, nn.Module], ledger: _Ledger) -> None:
    """Enter each parameter and buffer once, under the first network that holds it."""
    seen: set[int] = set()
    for name, net in networks.items():
        for p in net.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                ledger.add(p.untyped_storage(), ("weights", name))
        for buf in net.buffers():
            if id(buf) not in seen:
                seen.add(id(buf))
                ledger.add(buf.untyped_storage(), ("buffers", name))


def _grad_hooks(method: Method, spans: dict, param_net: dict[int, str], ledger: _Ledger) -> list:
    """Hooks that label each trained parameter's accumulated gradient with its network."""
    hooks = []
    for name in spans:
        for p in method.networks[name].parameters():
            if p.requires_grad:
                hooks.append(
                    p.register_post_accumulate_grad_hook(
                        lambda p, n=param_net[id(p)]: ledger.relabel(p.grad.untyped_storage(), ("grads", n))
                    )
                )
    return hooks


def _plan_of(
    cfg: ExperimentConfig,
    ledger: _Ledger,
    networks: dict[str, nn.Module],
    roles: dict,
    spans: dict,
    step: int,
) -> MemoryPlan:
    """The plan the ledger recorded over the step."""
    sums, max_sums = ledger.peak_sums, ledger.max_sums
    result_nets = []
    for name, net in networks.items():
        weights = ledger.sums.get(("weights", name), 0) + ledger.sums.get(("buffers", name), 0)
        result_nets.append(
            NetworkMemory(
                name=name,
                role=roles.get(name, "held"),
                params=sum(p.numel() for p in net.parameters()),
                weights=weights,
                grads=max_sums.get(("grads", name), 0),
                adamw=ledger.sums.get(("adamw", name), 0),
                activations_at_peak=sums.get(("activations", name), 0),
                activations_max=max_sums.get(("activations", name), 0),
                checkpointing=_checkpointed(net),
            )
        )
    active = [n for n, sp in spans.items() if sp.start <= step < sp.end]
    breakdown = {c: 0 for c in CATEGORIES}
    for (category, _), nbytes in sums.items():
        breakdown[category] += nbytes
    return MemoryPlan(
        config="",
        method=cfg.method.name,
        overrides=[],
        batch_size=cfg.data.batch_size,
        crop_size=tuple(cfg.data.crop_size),
        bf16=cfg.train.bf16,
        networks=result_nets,
        peak=ledger.peak,
        breakdown={k: v for k, v in breakdown.items() if v},
        peak_phase=ledger.peak_phase,
        note=f"step {step}, trains {', '.join(active)}",
    )


def _init_optimizer_state(optimizers: dict, executor: _Executor, ledger: _Ledger) -> None:
    """The state the first step leaves: each AdamW's moments, created by a step on zero
    gradients (which are then dropped, as ``zero_grad`` drops them)."""
    for name, opt in optimizers.items():
        executor.where = f"optimizer:{name}"
        for group in opt.param_groups:
            for p in group["params"]:
                p.grad = torch.zeros_like(p)
        opt.step()
        opt.zero_grad(set_to_none=True)
        _label_optimizer_state(opt, name, ledger)
    executor.where = "step"


def _label_optimizer_state(opt, name: str, ledger: _Ledger) -> None:
    for state in opt.state.values():
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                continue
            if key == "step":
                ledger.forget(value.untyped_storage())  # a host scalar (AdamW is not capturable)
            else:
                ledger.relabel(value.untyped_storage(), ("adamw", name))


def _run_step(method, optimizers, spans, cfg, step: int, batch: dict, executor: _Executor, ledger: _Ledger):
    """One step as ``duda.engine.trainer._Run.step`` takes it (no finiteness check: the losses
    have no values)."""

    active = [n for n, s in spans.items() if s.start <= step < s.end]
    for name in active:
        set_lr(optimizers[name], cfg.optim.lr, span_lr_factor(spans[name], step, cfg.optim))
        optimizers[name].zero_grad(set_to_none=True)
    seed = step_seed(cfg.train.seed, step, 0)
    torch.manual_seed(seed)
    ctx = StepContext(step=step, generator=torch.Generator().manual_seed(seed))
    executor.where = "step"
    out = method.train_step(batch, ctx)
    for name in active:
        executor.where = f"optimizer:{name}"
        optimizers[name].step()
        _label_optimizer_state(optimizers[name], name, ledger)
    executor.where = "step"
    del out


def _checkpointed(net: nn.Module) -> bool:

    return any(isinstance(m, MiTBackbone) and m.checkpointing for m in net.modules())


# --------------------------------------------------------------------------- switches and advice
#: The share of each crop side kept by the "smaller crop" switch (sides rounded to 32 pixels).
CROP_SHRINK = 0.75


@dataclass
class Switch:
    """A config change that lowers the memory of a step: its name, what it changes of the
    method (empty: the same training, only its cost changes) and its ``--set`` overrides."""

    name: str
    overrides: list[str]
    changes: str = ""


def memory_switches(cfg: ExperimentConfig, plan: MemoryPlan) -> list[Switch]:
    """The switches that apply to ``cfg`` (``plan`` is its plan), those that leave the training
    as it is first: activation checkpointing of the largest trained MiT network, bf16 autocast,
    the ImageNet feature distance off (where an ``imnet`` network is declared), a smaller crop
    (and detail crop of a multi-resolution network)."""

    specs = network_specs(cfg)
    out = []
    trained = [n for n in plan.networks if n.role == "train" and n.name in specs]
    if trained:
        large = specs[max(trained, key=lambda n: n.params).name]
        if recipe(large.config.name).backbone == "mit" and not large.config.checkpointing:
            out.append(
                Switch("activation checkpointing of the large encoder", [f"{large.key}.checkpointing=true"])
            )
    if not cfg.train.bf16:
        out.append(Switch("bf16 autocast", ["train.bf16=true"], "numerics: bf16 matmuls and convolutions"))
    if "imnet" in specs:
        out.append(
            Switch("ImageNet feature distance off", [FEATURE_DISTANCE_OFF], "drops a loss of the method")
        )
    h, w = (_shrink(s) for s in cfg.data.crop_size)
    if (h, w) != tuple(cfg.data.crop_size):
        overrides = [f"data.crop_size=[{h},{w}]"]
        multires = next((s.multires for s in specs.values() if s.multires), None)
        if multires and "hr_crop_size" in multires:
            hh, hw = (_shrink(s) for s in multires["hr_crop_size"])
            overrides.append(f"{DETAIL_CROP_KEY}=[{min(hh, h)},{min(hw, w)}]")
        out.append(Switch(f"smaller crop {h}×{w}", overrides, "less context per image"))
    return out


def _shrink(side: int) -> int:
    return max(32, round(side * CROP_SHRINK / 32) * 32)


@dataclass
class Advice:
    """A plan against a GPU budget: the plan, each switch's plan, and the first set of switches
    (in :func:`memory_switches`' order, one alone if one suffices) whose plan fits."""

    budget_gib: float
    plan: MemoryPlan
    options: list[tuple[Switch, MemoryPlan]]
    recipe: list[Switch] | None  # None: nothing tried fits; []: the config fits as it is
    recipe_plan: MemoryPlan | None


def advise(
    path: str,
    overrides: list[str] | None,
    budget_gib: float,
    plan: MemoryPlan | None = None,
    progress: Callable[[str], None] | None = None,
) -> Advice:
    """Plan ``path`` and each of its switches against ``budget_gib`` GiB of GPU memory."""
    overrides = list(overrides or [])
    say = progress or (lambda _: None)
    if plan is None:
        plan = plan_config(path, overrides)
    cfg = load_config(path, overrides)
    options = []
    for switch in memory_switches(cfg, plan):
        say(f"planning with {switch.name} ...")
        options.append((switch, plan_config(path, overrides + switch.overrides)))
    if fits(plan, budget_gib):
        return Advice(budget_gib, plan, options, [], plan)
    for switch, switched in options:
        if fits(switched, budget_gib):
            return Advice(budget_gib, plan, options, [switch], switched)
    chosen: list[Switch] = []
    for switch, _ in options:
        chosen.append(switch)
        if len(chosen) < 2:
            continue
        say(f"planning with {' + '.join(s.name for s in chosen)} ...")
        combined = plan_config(path, overrides + [o for s in chosen for o in s.overrides])
        if fits(combined, budget_gib):
            return Advice(budget_gib, plan, options, list(chosen), combined)
    return Advice(budget_gib, plan, options, None, None)


# --------------------------------------------------------------------------- text
def _unit(plan: MemoryPlan) -> tuple[str, int]:
    """GiB, or MiB for a plan that peaks under 1 GiB (tiny models)."""
    return ("GiB", GIB) if plan.peak >= GIB else ("MiB", 1024**2)


def _count(n: int) -> str:
    return f"{n / 1e6:.1f} M" if n >= 1e5 else f"{n / 1e3:.1f} k"


_BREAKDOWN_NAMES = {
    "weights": "weights",
    "buffers": "buffers",
    "grads": "grads",
    "adamw": "AdamW",
    "activations": "activations",
    "backward": "backward temporaries",
    "optimizer": "AdamW-step temporaries",
    "batch": "batch",
    "step": "step code",
}


def format_plan(plan: MemoryPlan) -> str:
    """The plan as a table per network, the peak's composition and the predicted peak."""
    unit, scale = _unit(plan)

    def amount(nbytes: int) -> str:
        return f"{nbytes / scale:.2f}"

    h, w = plan.crop_size
    precision = "bf16 autocast" if plan.bf16 else "fp32"
    sets = "".join(f" --set {o}" for o in plan.overrides)
    width = max(15, *(len(n.name) for n in plan.networks))
    lines = [
        f"duda plan {plan.config}{sets}",
        f"method {plan.method}, batch {plan.batch_size}, crop {h}×{w}, {precision}"
        + (f"; {plan.note}" if plan.note else ""),
        "",
        f"{'network':<{width}} {'role':<8} {'params':>9} {'weights':>8} {'grads':>8} {'AdamW':>8} "
        f"{'act@peak':>9} {'act max':>8}   ({unit}; act = what its forward passes hold)",
    ]
    for net in plan.networks:
        mark = " (checkpointed)" if net.checkpointing else ""
        lines.append(
            f"{net.name:<{width}} {net.role:<8} {_count(net.params):>9} {amount(net.weights):>8} "
            f"{amount(net.grads) if net.grads else '-':>8} {amount(net.adamw) if net.adamw else '-':>8} "
            f"{amount(net.activations_at_peak):>9} {amount(net.activations_max):>8}{mark}"
        )
    parts = ", ".join(f"{_BREAKDOWN_NAMES[k]} {amount(v)}" for k, v in plan.breakdown.items())
    lines += [
        "",
        f"at the peak, {plan.peak_phase} ({unit}): {parts}",
        f"predicted peak (torch.cuda.max_memory_allocated): {amount(plan.peak)} {unit}",
        f"GPU memory needed (+{ALLOCATOR_RESERVE:.0%} allocator reserve, +{CUDA_CONTEXT_GIB} GiB CUDA "
        f"context): {plan.required_gib():.2f} GiB",
    ]
    return "\n".join(lines)


def format_advice(advice: Advice, path: str) -> str:
    """Whether the plan fits the budget, each switch's peak, and the recipe that fits."""
    budget = advice.budget_gib
    verdict = "fits" if fits(advice.plan, budget) else "does NOT fit"
    lines = [
        f"GPU budget {budget:g} GiB: {verdict} (needs {advice.plan.required_gib():.2f} GiB)",
        "",
        f"{'switch':<46} {'peak':>6} {'needs':>6}  {'fits':<4}  --set",
    ]
    for switch, plan in advice.options:
        ok = "yes" if fits(plan, budget) else "no"
        lines.append(
            f"{switch.name:<46} {plan.peak_gib:>6.2f} {plan.required_gib():>6.2f}  {ok:<4}  "
            + " ".join(switch.overrides)
        )
    lines.append("")
    if advice.recipe == []:
        lines.append("no switch needed.")
    elif advice.recipe is None:
        lines.append(f"no combination of these switches fits {budget:g} GiB; lower data.batch_size.")
    else:
        plan = advice.recipe_plan
        assert plan is not None
        names = " + ".join(s.name for s in advice.recipe)
        sets = " ".join(
            f"--set {o}" for o in [*advice.plan.overrides, *(o for s in advice.recipe for o in s.overrides)]
        )
        changes = [f"{s.name}: {s.changes}" for s in advice.recipe if s.changes]
        lines += [
            f"recipe: {names}: peak {plan.peak_gib:.2f} GiB, needs {plan.required_gib():.2f} GiB",
            f"  duda train {path} {sets}",
        ]
        if changes:
            lines.append("  (changes the training: " + "; ".join(changes) + ")")
    return "\n".join(lines)
