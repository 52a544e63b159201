"""DUDA: distilled UDA with a large EMA teacher T, a large student L and a small student S.

Stage 1, pre-adaptation (steps [0, N1)): L trains exactly as the base method (DAFormer, MIC,
HRDA or MIC(HRDA): ``method.base``; L's step *is* that method's step) with T = EMA(L) as its
teacher. S sees the same source crop and the same mixed (and masked)
images, labelled by the same single teacher forward, and gets
``CE_src(S) + λ(t) · CE_tgt(S)`` where λ ramps from 0 to 1 (gradual distillation).

Stage 2, fine-tuning (steps [N1, iters)): T (in eval mode) and any extra teachers are frozen;
their probabilities are fused; S trains on source labels and on ClassMix images labelled by the
fused teachers, with target pixels weighted by ``1 + γ·I'_c``, the normalised per-class
inconsistency between the teachers' and S's predictions on the target training images.
S may be single-resolution under a multi-resolution teacher: with
``method.duda.small_input_scale`` = s it resizes every image by s itself (part of the network,
so evaluation and the shipped model do the same) and its logits are upsampled to the labels.
See docs/method.md.
"""

from __future__ import annotations

import torch
from torch import nn

from duda.config import ExperimentConfig
from duda.errors import ConfigError
from duda.methods.base import Method, NetworkSpec, StepContext, network_files
from duda.methods.bench_cases import BenchCase, large_in
from duda.methods.registry import method_class, register_method
from duda.methods.self_training import (
    MEAN,
    STD,
    SelfTraining,
    make_frozen,
    masked_batch,
    mixed_batch,
    probs_at,
    pseudo_labels,
    strong_aug_config,
)
from duda.uda.distill import distill_weight
from duda.uda.fusion import fuse_probs
from duda.uda.inconsistency import InconsistencyMeter, pixel_weights
from duda.uda.losses import ce, kd_kl, soft_ce, weighted_ce
from duda.uda.strong_aug import strong_transform


def mixed_probs(probs: torch.Tensor, src_gt: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The soft label of a ClassMix image: the source's one-hot label where ``mask`` (B×H×W,
    1 = source pixel) is set (all zeros at ignored source pixels: no loss there), the teachers'
    probabilities elsewhere; ``mask`` None: the probabilities alone."""
    if mask is None:
        return probs
    k = probs.shape[1]
    valid = src_gt != 255
    onehot = torch.nn.functional.one_hot(torch.where(valid, src_gt, 0).long(), k).permute(0, 3, 1, 2)
    onehot = onehot.to(probs.dtype) * valid.unsqueeze(1).to(probs.dtype)
    m = mask.unsqueeze(1).to(probs.dtype)
    return m * onehot + (1 - m) * probs


@register_method
class DUDA(Method):
    """T, L and S on any self-training base (``method.base``: daformer, mic, hrda, mic_hrda)."""

    name = "duda"
    summary = (
        "DUDA: a large EMA teacher, a large and a small student; pre-adaptation, then distillation "
        "(L trains as method.base, whose sections it reads too)"
    )
    sections = ("uda", "duda")
    eval_networks = ("student", "teacher", "large")
    # `duda bench`: stage 1 (L with T, and S) and stage 2 (S with the frozen T; I'_c given directly,
    # so no target pass), each compared with the large model trained alone
    bench_cases = (
        BenchCase(
            "duda-stage1", "duda", large_in("duda", stage1_iters=5), trains_small=True, rank=3,
            trains="large + small with the EMA teacher", label="DUDA stage-1", compare=True,
            target_ratio=1.25, loader_demand=True,
        ),
        BenchCase(
            "duda-stage2", "duda", large_in("duda", stage1_iters=5), trains_small=True, step=6,
            prepare=lambda method, classes: setattr(method, "inconsistency", torch.linspace(0, 1, classes)),
            rank=4, trains="the small model with the frozen teacher (inconsistency weights set directly)",
            label="DUDA stage-2", compare=True,
        ),
    )  # fmt: skip

    # ------------------------------------------------------------------ declaration
    @classmethod
    def base_class(cls, cfg: ExperimentConfig) -> type[SelfTraining]:
        """The base method whose step L takes (its ``student`` is L, its ``teacher`` T)."""
        base = method_class(cfg.method.base)
        if not issubclass(base, SelfTraining):
            error = ConfigError(
                f"method.base: {cfg.method.base!r} is not a self-training method; DUDA's large student "
                "trains as daformer, mic, hrda, mic_hrda or another SelfTraining subclass"
            )
            error.key = "method.base"
            raise error
        return base

    @classmethod
    def network_specs(cls, cfg: ExperimentConfig) -> dict[str, NetworkSpec]:
        """L (trained during stage 1), T (its EMA), the ImageNet copy, and S (trained throughout)."""
        d = cfg.method.duda
        base = cls.base_class(cfg).network_specs(cfg, model=d.large, span=(0, d.stage1_iters))
        specs = {"large": base.pop("student"), "teacher": base.pop("teacher")}
        specs["teacher"].source = "large"
        specs.update(base)
        for spec in specs.values():
            spec.key = "method.duda.large"
        restart = (d.stage1_iters, d.stage2_lr_restart) if d.stage2_lr_restart > 0 else None
        specs["student"] = NetworkSpec(
            cfg.model, "train", (0, cfg.train.iters), input_scale=d.small_input_scale, lr_restart=restart
        )
        return specs

    @classmethod
    def check_config(cls, cfg: ExperimentConfig) -> None:
        super().check_config(cfg)
        cls.base_class(cfg).check_config(cfg)
        d = cfg.method.duda
        if not 0 < d.stage1_iters <= cfg.train.iters:
            error = ConfigError(
                f"method.duda.stage1_iters={d.stage1_iters} must be in (0, train.iters={cfg.train.iters}]"
            )
            error.key = "method.duda.stage1_iters"
            raise error
        for key in ("stage2_lr_restart", "stage2_source_weight", "kd_weight"):
            if not getattr(d, key) >= 0:
                error = ConfigError(f"method.duda.{key}: expected >= 0, got {getattr(d, key)}")
                error.key = f"method.duda.{key}"
                raise error
        if not d.small_input_scale > 0:
            error = ConfigError(f"method.duda.small_input_scale: expected > 0, got {d.small_input_scale}")
            error.key = "method.duda.small_input_scale"
            raise error

    # ------------------------------------------------------------------ construction
    def __init__(self, cfg, num_classes: int, device: torch.device) -> None:
        super().__init__(cfg, num_classes, device)
        self.d = cfg.method.duda
        self.uda = cfg.method.uda
        self.n1 = self.d.stage1_iters
        # L and T are the base method's student and teacher: L's step is the base method's step
        self.base = self.base_class(cfg)(
            cfg,
            num_classes,
            device,
            model=self.d.large,
            pretrained=not self.d.large_init,
            init_student=self._init_large if self.d.large_init else None,
        )
        self.mic = self.base.masking
        self.networks["large"] = self.base.networks["student"]
        self.networks["teacher"] = self.base.networks["teacher"]
        if "imnet" in self.base.networks:
            self.networks["imnet"] = self.base.networks["imnet"]
        self.networks["student"] = self.build(cfg.model, input_scale=self.d.small_input_scale)
        # extra frozen teachers (multi-teacher); rebuilt from their files, not checkpointed
        self.extra_teachers: list[tuple[nn.Module, float]] = []
        for spec in self.d.teachers:
            loaded = network_files("method.duda.teachers").load(spec.checkpoint, which=spec.network)
            if not isinstance(loaded.model, nn.Module):
                raise ConfigError(f"method.duda.teachers: {spec.checkpoint} is not a PyTorch model (ONNX?)")
            if loaded.num_classes != num_classes:
                raise ConfigError(
                    f"method.duda.teachers: {spec.checkpoint} predicts {loaded.num_classes} classes, "
                    f"this run has {num_classes}"
                )
            self.extra_teachers.append((make_frozen(loaded.model.to(device)), spec.weight))
        self.inconsistency: torch.Tensor | None = None  # I'_c, set at the start of stage 2
        self.inconsistency_step = -1

    def net(self, name: str) -> nn.Module:
        return self.base.net("student") if name == "large" else super().net(name)

    def set_forward(self, name: str, module: nn.Module) -> None:
        if name == "large":
            self.base.set_forward("student", module)
        else:
            super().set_forward(name, module)

    def _init_large(self, large: nn.Module) -> dict | None:
        """Load ``method.duda.large_init`` into L; returns T's weights when the file has its own
        (a published mmseg checkpoint with an EMA teacher), read by ``duda.inference``."""
        where = f"method.duda.large_init={self.d.large_init}"
        student, teacher = network_files(where).init_states(
            self.d.large_init, large, where, model_name=self.d.large.name, num_classes=self.num_classes
        )
        large.load_state_dict(student)
        return teacher

    def train_step(self, batch: dict, ctx: StepContext) -> dict:
        if ctx.step < self.n1:
            return self._stage1(batch, ctx)
        return self._stage2(batch, ctx)

    def small_loss(self, small: nn.Module, img: torch.Tensor, lbl: torch.Tensor, wgt=None):
        """S's CE (pixel-weighted when ``wgt``) on ``img``; returns the loss and the logits."""
        with self.autocast():
            logits = small(img)
        loss = ce(logits.float(), lbl) if wgt is None else weighted_ce(logits.float(), lbl, wgt)
        return loss, logits

    def small_soft_loss(self, small: nn.Module, img: torch.Tensor, target: torch.Tensor, wgt):
        """S's cross-entropy against a target distribution (pixel-weighted); loss and logits."""
        with self.autocast():
            logits = small(img)
        return soft_ce(logits.float(), target, wgt), logits

    # ------------------------------------------------------------------ stage 1
    def _stage1(self, batch: dict, ctx: StepContext) -> dict:
        uda = self.uda
        small = self.net("student")
        losses: dict = {}
        lam = distill_weight(ctx.step, self.n1, self.d.distill_ramp, self.d.distill)

        # L: exactly the base method's step (EMA of T, source, pseudo-labels, mix, mask)
        # (every forward of L comes before any of S: dropout draws from the global RNG, so L
        # sees exactly the random stream of a base-method run)
        out = self.base.adapt_step(batch, ctx, losses)

        # S: source CE + λ(t) · target CE on the same mixed (and masked) images
        s_src, _ = self.small_loss(small, batch["src_img"], batch["src_gt"])
        if self.d.stage1_targets == "soft":
            probs = probs_at(out.teacher_logits, batch["tgt_img"].shape[-2:])
            target = mixed_probs(probs, batch["src_gt"], out.mix_mask)
            s_mix, s_mix_logits = self.small_soft_loss(small, out.mix_img, target, out.mix_w)
        else:
            s_mix, s_mix_logits = self.small_loss(small, out.mix_img, out.mix_lbl, out.mix_w)
        loss_s = s_src + lam * s_mix
        losses["small_src"], losses["small_mix"] = s_src.detach(), s_mix.detach()

        if out.masked is not None:
            s_mic, _ = self.small_loss(small, *out.masked)
            s_mic = uda.mask_weight * s_mic
            loss_s = loss_s + lam * s_mic
            losses["small_mic"] = s_mic.detach()
        if self.d.kd_weight > 0 and self.d.kd_stages == "both":
            loss_s = loss_s + lam * self._kd(small, batch, out.teacher_logits, losses)
        loss_s.backward()
        losses["lambda"] = torch.tensor(lam)
        losses["pseudo_weight"] = out.weight.mean().detach()
        visuals = self._visuals(
            ctx, batch, out.labels, out.weight, out.mix_img, out.mix_lbl, out.mix_logits, s_mix_logits
        )
        return {"losses": losses, "visuals": visuals}

    # ------------------------------------------------------------------ stage 2
    def frozen_teachers(self) -> list[tuple[nn.Module, float]]:
        teachers = list(self.extra_teachers)
        if self.d.stage1_teacher_weight > 0:
            teachers.insert(0, (self.networks["teacher"], self.d.stage1_teacher_weight))
        if not teachers:
            raise ConfigError(
                "method.duda: stage 2 has no teacher (stage1_teacher_weight is 0 and teachers is empty)"
            )
        return teachers

    @torch.no_grad()
    def fused_probs(self, img: torch.Tensor) -> torch.Tensor:
        teachers = self.frozen_teachers()
        probs = []
        for net, _ in teachers:
            net.eval()
            with self.autocast():
                logits = net(img)
            probs.append(probs_at(logits, img.shape[-2:]))
        return fuse_probs(probs, [w for _, w in teachers])

    @torch.no_grad()
    def compute_inconsistency(self, ctx: StepContext) -> torch.Tensor:
        """I'_c between the (fused) teachers and S, over the target training images."""
        if ctx.target_images is None:
            raise ConfigError("DUDA stage 2 needs target training images (data.target)")
        small = self.networks["student"]
        was_training = small.training
        small.eval()
        meter = InconsistencyMeter(self.num_classes)
        for sample in ctx.target_images(self.d.inconsistency_images):
            img = sample["img"].to(self.device, non_blocking=True)
            if img.ndim == 3:
                img = img.unsqueeze(0)
            pred_t = self.fused_probs(img).argmax(1)
            with self.autocast():
                pred_s = probs_at(small(img), img.shape[-2:]).argmax(1)
            meter.update(pred_t, pred_s)
        small.train(was_training)
        if ctx.all_reduce is not None:
            counts = torch.stack([meter.intersection, meter.union]).to(self.device, non_blocking=True)
            counts = ctx.all_reduce(counts).cpu()
            meter.intersection, meter.union = counts[0], counts[1]
        return meter.compute().normalised.float()

    def _stage2(self, batch: dict, ctx: StepContext) -> dict:
        uda, gen, d = self.uda, ctx.generator, self.d
        small = self.net("student")
        losses: dict = {}
        events: dict = {}
        k = ctx.step - self.n1
        refresh = d.inconsistency_refresh > 0 and k % d.inconsistency_refresh == 0
        if d.inconsistency and (
            self.inconsistency is None or (refresh and self.inconsistency_step != ctx.step)
        ):
            self.inconsistency = self.compute_inconsistency(ctx)
            self.inconsistency_step = ctx.step
            events["inconsistency"] = dict(enumerate(self.inconsistency.tolist()))

        probs = self.fused_probs(batch["tgt_img"])
        labels, weight = pseudo_labels(probs, batch, uda)
        if d.inconsistency and self.inconsistency is not None:
            per_class = self.inconsistency.to(labels.device, non_blocking=True)
            weight = weight * pixel_weights(labels, per_class, gamma=d.gamma)

        loss, _ = self.small_loss(small, batch["src_img"], batch["src_gt"])
        losses["small_src"] = loss.detach()
        if d.stage2_source_weight != 1.0:
            loss = d.stage2_source_weight * loss
        if d.finetune_mix:
            img, lbl, wgt, mask = mixed_batch(batch, labels, weight, uda, gen)
        else:
            img = strong_transform(batch["tgt_img"], MEAN, STD, gen, strong_aug_config(uda))
            lbl, wgt, mask = labels, weight, None
        if d.stage2_targets == "soft":
            s_tgt, s_logits = self.small_soft_loss(small, img, mixed_probs(probs, batch["src_gt"], mask), wgt)
        else:
            s_tgt, s_logits = self.small_loss(small, img, lbl, wgt)
        loss = loss + s_tgt
        losses["small_mix"] = s_tgt.detach()
        if self.mic and uda.mask_weight > 0:
            s_mic, _ = self.small_loss(small, *masked_batch(batch, labels, weight, uda, gen))
            s_mic = uda.mask_weight * s_mic
            loss = loss + s_mic
            losses["small_mic"] = s_mic.detach()
        if d.kd_weight > 0:  # every kd_stages value includes stage 2
            loss = loss + self._kd(small, batch, torch.log(probs.clamp_min(1e-8)), losses)
        loss.backward()
        losses["pseudo_weight"] = weight.mean().detach()
        visuals = self._visuals(ctx, batch, labels, weight, img, lbl, None, s_logits)
        return {"losses": losses, "visuals": visuals, "events": events}

    # ------------------------------------------------------------------ helpers
    def _kd(self, small, batch: dict, teacher_logits: torch.Tensor, losses: dict) -> torch.Tensor:
        with self.autocast():
            s_logits = small(batch["tgt_img"])
        loss = self.d.kd_weight * kd_kl(s_logits.float(), teacher_logits.float(), self.d.kd_temperature)
        losses["kd"] = loss.detach()
        return loss

    def _visuals(self, ctx, batch, labels, weight, mix_img, mix_lbl, large_logits, small_logits) -> dict:
        if not ctx.want_visuals:
            return {}
        vis = {
            "src_img": batch["src_img"],
            "src_gt": batch["src_gt"],
            "tgt_img": batch["tgt_img"],
            "pseudo_label": labels,
            "pseudo_weight": weight.clamp(0, 1),
            "mix_img": mix_img,
            "mix_label": mix_lbl,
            "small_mix_pred": small_logits.detach().argmax(1),
        }
        if large_logits is not None:
            vis["mix_pred"] = large_logits.detach().argmax(1)
        return vis

    def extra_state(self) -> dict:
        if self.inconsistency is None:
            return {}
        return {"inconsistency": self.inconsistency.cpu(), "inconsistency_step": self.inconsistency_step}

    def load_extra_state(self, state: dict) -> None:
        if "inconsistency" in state:
            self.inconsistency = state["inconsistency"].float()
            self.inconsistency_step = int(state.get("inconsistency_step", -1))
