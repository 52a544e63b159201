"""`duda inconsistency`: per-class I'_c of a DUDA run, beside the true IoU gap (Fig. 4a)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inconsistency",
        help="per-class inconsistency I'_c of a large/small pair, with the true IoU gap where labels exist",
        description=(
            "Compute I_c = 1 - IoU(large prediction, small prediction) per class over target images "
            "(no labels needed), normalised to I'_c = I_c / max I. Where the images have labels, the "
            "true per-class IoU of both models, their gap and the Spearman rank correlation of gap and "
            "I'_c are printed beside it, and a bar chart is written (the paper's Figure 4a)."
        ),
    )
    p.add_argument("checkpoint", metavar="CKPT", help="DUDA training checkpoint (.pt) or run folder")
    p.add_argument("--large", default="teacher", help="network of the checkpoint used as the large model")
    p.add_argument("--small", default="student", help="network used as the small model")
    p.add_argument(
        "--split",
        choices=("target", "val"),
        default="val",
        help="images: the run's target training split or its labelled val split (default)",
    )
    p.add_argument("--max-images", type=int, default=0, help="use at most N images (0 = all)")
    p.add_argument(
        "--out", default=None, metavar="DIR", help="where to write the PNG and JSON (default: run folder)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # deferred, as in every command: `duda --help` must not load torch (duda/commands/__init__.py)
    import json
    from pathlib import Path

    import torch

    from duda.checkpoints import latest_checkpoint, load_checkpoint
    from duda.data.datasets import build_dataset_from_config
    from duda.data.loader import EvalSet, build_eval_loader
    from duda.errors import CheckpointError, ConfigError
    from duda.evaluation.inconsistency_report import inconsistency_report, plot_report
    from duda.inference import load_inference_model
    from duda.inference.device import resolve_device
    from duda.methods import config_from_dict

    path = Path(args.checkpoint)
    if path.is_dir():
        found = latest_checkpoint(path / "checkpoints") or latest_checkpoint(path)
        if found is None:
            raise CheckpointError(f"{path}: no checkpoints/iter_*.pt in this folder")
        path = found
    cfg = config_from_dict(load_checkpoint(path)["config"])
    ds_cfg = cfg.data.val if args.split == "val" else cfg.data.target
    if ds_cfg is None:
        raise ConfigError(f"{path}: the run has no data.{args.split} split")
    dataset = build_dataset_from_config(ds_cfg)
    device = resolve_device(args.device, what="--device")
    large = load_inference_model(path, which=args.large)
    small = load_inference_model(path, which=args.small)
    eval_set = EvalSet(dataset, resize=ds_cfg.resize or dataset.default_resize)
    if args.max_images and args.max_images < len(eval_set):
        eval_set = torch.utils.data.Subset(eval_set, range(args.max_images))
    report = inconsistency_report(
        large.model.to(device),
        small.model.to(device),
        build_eval_loader(eval_set, workers=2),
        large.classes,
        device,
    )
    print(report.table())
    out = Path(args.out) if args.out else path.parent.parent
    out.mkdir(parents=True, exist_ok=True)
    (out / "inconsistency.json").write_text(json.dumps(report.to_dict(), indent=2))
    png = plot_report(report, out / "inconsistency.png", title=f"{large.model_name} vs {small.model_name}")
    print(f"wrote {out / 'inconsistency.json'} and {png}")
    return 0
