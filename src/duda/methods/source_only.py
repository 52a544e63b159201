"""Source-only training: supervised cross-entropy on the labelled domain.

With a labelled *target* split as ``data.source`` this is also the oracle (the ceiling).
"""

from __future__ import annotations

import torch

from duda.methods.base import Method, StepContext, TrainSpan
from duda.uda.losses import ce


class SourceOnly(Method):
    eval_networks = ("student",)

    def __init__(self, cfg, num_classes: int, device: torch.device) -> None:
        super().__init__(cfg, num_classes, device)
        self.networks["student"] = self.build(cfg.model)

    def spans(self) -> dict[str, TrainSpan]:
        return {"student": TrainSpan(self.cfg.model, 0, self.cfg.train.iters)}

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
