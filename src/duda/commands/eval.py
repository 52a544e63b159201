"""`duda eval`: mIoU of a trained model on a dataset split, or of a folder of predictions."""

from __future__ import annotations

import argparse

from duda.commands import add_overrides_argument


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint on a dataset split, or score a folder of predicted PNGs",
        description=(
            "Two forms. (1) duda eval CONFIG --checkpoint CKPT: predict the val split of CONFIG "
            "(data.val) with a network of the checkpoint and report per-class IoU, mIoU19 and, for "
            "19 classes, mIoU16/mIoU13. (2) duda eval --pred DIR --gt DIR: score predicted trainId "
            "PNGs against trainId labels matched by file stem (ACDC / Dark Zurich submission form)."
        ),
    )
    p.add_argument("config", nargs="?", help="YAML experiment config (form 1)")
    p.add_argument(
        "--checkpoint",
        help="training checkpoint .pt, run folder, deploy folder or a published DAFormer/MIC "
        "(mmseg) latest.pth (form 1)",
    )
    p.add_argument(
        "--model",
        default="student",
        help="network to evaluate: student (the shipped model, default), teacher, large; for an mmseg "
        "latest.pth: student/model = its model.* network (what the reference evaluates), "
        "teacher/ema_model = its EMA teacher",
    )
    add_overrides_argument(p)
    p.add_argument("--mode", choices=("whole", "slide"), help="inference mode (default: train.eval_mode)")
    p.add_argument("--flip", action="store_true", help="average with the mirrored prediction")
    p.add_argument("--save-pred", metavar="DIR", help="also write the predicted trainId PNGs here")
    p.add_argument("--pred", metavar="DIR", help="folder of predicted trainId PNGs (form 2)")
    p.add_argument("--gt", metavar="DIR", help="folder of trainId label PNGs (form 2)")
    p.add_argument("--pred-suffix", default="", help="suffix stripped from prediction stems (form 2)")
    p.add_argument("--gt-suffix", default="", help="suffix stripped from label stems, e.g. _gt_labelTrainIds")
    p.add_argument("--num-classes", type=int, default=19, help="number of classes (form 2)")
    p.add_argument("--out", metavar="JSON", help="write the result as JSON")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # deferred, as in every command: `duda --help` must not load torch (duda/commands/__init__.py)
    from pathlib import Path

    from duda.errors import DudaError

    if args.out and Path(args.out).is_dir():
        raise DudaError(f"--out {args.out}: is a folder, expected a JSON file name")
    if args.save_pred and Path(args.save_pred).is_file():
        raise DudaError(f"--save-pred {args.save_pred}: is a file, expected a folder")
    if args.pred or args.gt:
        if not (args.pred and args.gt):
            raise DudaError("--pred and --gt go together: a folder of predictions and a folder of labels")
        return _score_folders(args)
    if not (args.config and args.checkpoint):
        raise DudaError("give CONFIG and --checkpoint CKPT, or --pred DIR and --gt DIR")
    return _eval_checkpoint(args)


def _score_folders(args: argparse.Namespace) -> int:
    # deferred, as in every command: `duda --help` must not load torch (duda/commands/__init__.py)
    from duda.data.labels import CITYSCAPES
    from duda.evaluation.evaluate import score_folders
    from duda.evaluation.metrics import write_result_json

    names = list(CITYSCAPES.names) if args.num_classes == 19 else None
    result = score_folders(
        args.pred, args.gt, args.num_classes, names, pred_suffix=args.pred_suffix, gt_suffix=args.gt_suffix
    )
    print(result.table(names))
    if args.out:
        write_result_json(result, args.out, names, extra={"pred": args.pred, "gt": args.gt})
    return 0


def _eval_checkpoint(args: argparse.Namespace) -> int:
    # deferred, as in every command: `duda --help` must not load torch (duda/commands/__init__.py)
    from pathlib import Path

    from duda.api import load_model
    from duda.data.datasets import build_dataset_from_config
    from duda.engine.trainer import make_eval_loader
    from duda.errors import ConfigError
    from duda.evaluation.evaluate import evaluate
    from duda.evaluation.metrics import write_result_json
    from duda.evaluation.visualize import save_png
    from duda.inference.device import resolve_device
    from duda.methods import load_config

    cfg = load_config(args.config, args.overrides)
    if cfg.data.val is None:
        raise ConfigError(f"{args.config}: data.val is not set; nothing to evaluate on")
    dataset = build_dataset_from_config(cfg.data.val)
    loaded = load_model(args.checkpoint, which=args.model).loaded
    if loaded.num_classes != dataset.labels.num_classes:
        raise ConfigError(
            f"{args.checkpoint} predicts {loaded.num_classes} classes; {cfg.data.val.root} has "
            f"{dataset.labels.num_classes}"
        )
    device = resolve_device(args.device, what="--device")
    model = loaded.model.to(device).eval() if hasattr(loaded.model, "to") else loaded.model
    loader = make_eval_loader(cfg, dataset, cfg.data.val, device=device)
    hook = None
    if args.save_pred:
        out = Path(args.save_pred)

        def hook(name, pred):
            save_png(out / f"{Path(name).stem}_trainIds.png", pred)

    result = evaluate(
        model,
        loader,
        loaded.num_classes,
        mode=args.mode or cfg.train.eval_mode,
        crop=tuple(cfg.train.eval_crop),
        stride=tuple(cfg.train.eval_stride),
        flip=args.flip,
        bf16=cfg.train.bf16,
        device=device,
        on_prediction=hook,
    )
    names = list(dataset.labels.names)
    print(result.table(names))
    if args.out:
        write_result_json(
            result, args.out, names, extra={"checkpoint": str(args.checkpoint), "model": args.model}
        )
    return 0
