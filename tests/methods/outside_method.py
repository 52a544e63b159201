"""A method defined outside duda, as a user would write it: one file, registered by decorator.

MinEnt (Vu et al., CVPR 2019): source cross-entropy plus the mean pixel entropy of the target
predictions. ``duda --import outside_method train cfg.yaml`` with ``method.name: minent``.
"""

from __future__ import annotations

from dataclasses import dataclass

from duda.methods import Method, NetworkSpec, register_method
from duda.uda.losses import ce


@dataclass
class MinEntOptions:
    entropy_weight: float = 0.001  # weight of the target entropy


@register_method
class MinEnt(Method):
    name = "minent"
    summary = "MinEnt: source CE + target entropy minimisation (a method from a test file)"
    sections = ("options",)
    options_class = MinEntOptions

    @classmethod
    def network_specs(cls, cfg):
        return {"student": NetworkSpec(cfg.model, "train", (0, cfg.train.iters))}

    def __init__(self, cfg, num_classes, device):
        super().__init__(cfg, num_classes, device)
        self.opts = self.options(cfg)
        self.networks["student"] = self.build(cfg.model)

    def train_step(self, batch, ctx):
        net = self.net("student")
        src = ce(net(batch["src_img"]), batch["src_gt"])
        p = net(batch["tgt_img"]).softmax(1)
        ent = -(p * p.clamp_min(1e-8).log()).sum(1).mean()
        (src + self.opts.entropy_weight * ent).backward()
        return {"losses": {"src": src.detach(), "entropy": ent.detach()}, "visuals": {}}
