"""Source-only training: supervised cross-entropy on the labelled domain.

With a labelled *target* split as ``data.source`` this is also the oracle (the ceiling).
"""

from __future__ import annotations

from duda.methods.base import Method, NetworkSpec, StepContext
from duda.methods.bench_cases import BenchCase
from duda.methods.registry import register_method
from duda.uda.losses import ce


@register_method
class SourceOnly(Method):
    name = "source_only"
    summary = "supervised training on the labelled domain only (with a labelled target: the oracle)"
    needs_target = False
    bench_cases = (BenchCase("source_only", "source_only", rank=0, trains="the large model alone"),)

    @classmethod
    def network_specs(cls, cfg) -> dict[str, NetworkSpec]:
        return {"student": NetworkSpec(cfg.model, "train", (0, cfg.train.iters))}

    def __init__(self, cfg, num_classes: int, device) -> None:
        super().__init__(cfg, num_classes, device)
        self.networks["student"] = self.build(cfg.model)

    def train_step(self, batch: dict, ctx: StepContext) -> dict:
        student = self.net("student")
        with self.autocast():
            logits = student(batch["src_img"])
        loss = ce(logits.float(), batch["src_gt"])
        loss.backward()
        visuals = {}
        if ctx.want_visuals:
            visuals = {
                "src_img": batch["src_img"],
                "src_gt": batch["src_gt"],
                "src_pred": logits.detach().argmax(1),
            }
        return {"losses": {"src": loss.detach()}, "visuals": visuals}
