"""`duda prepare DATASET ROOT`: trainId label maps and class statistics for a dataset."""

from __future__ import annotations

import argparse

DATASETS = ("gta", "synthia", "cityscapes", "acdc", "darkzurich", "folder")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="convert label maps to trainIds and count class pixels (for rare-class sampling)",
        description=(
            "Write each label map as trainIds beside the original (e.g. labels/00001_labelTrainIds.png, "
            "..._gtFine_labelTrainIds.png) and per-image class pixel counts to ROOT/sample_class_stats.json. "
            "Safe to re-run: only missing outputs are produced."
        ),
    )
    parser.add_argument("dataset", choices=DATASETS, help="dataset layout of ROOT")
    parser.add_argument("root", help="dataset root folder")
    parser.add_argument(
        "--split",
        action="append",
        default=None,
        help="split to convert (repeatable; default: every labelled split present, e.g. train and val)",
    )
    parser.add_argument(
        "--condition",
        action="append",
        default=None,
        help="acdc only: condition(s) to convert (fog, night, rain, snow; repeatable; default all)",
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--images", default=None, help="folder only: image folder (default ROOT/images)")
    parser.add_argument("--labels", default=None, help="folder only: label folder (default ROOT/labels)")
    parser.add_argument(
        "--classes-file", default=None, help="folder only: class list YAML/JSON (default ROOT/classes.yaml)"
    )
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # deferred, as in every command: `duda --help` must not load torch (duda/commands/__init__.py)
    from duda.data.prepare import prepare_dataset
    from duda.errors import DatasetError

    if args.workers < 1:
        raise DatasetError(f"--workers: expected a positive number, got {args.workers}")
    kw: dict[str, object] = {}
    if args.dataset == "folder":
        kw = {"images": args.images, "labels": args.labels, "classes_file": args.classes_file}
    elif args.images or args.labels or args.classes_file:
        raise DatasetError("--images/--labels/--classes-file apply only to the 'folder' dataset")
    if args.condition:
        if args.dataset != "acdc":
            raise DatasetError("--condition applies only to the 'acdc' dataset")
        kw["conditions"] = tuple(args.condition)
    summary = prepare_dataset(
        args.dataset, args.root, splits=args.split, workers=args.workers, progress=not args.no_progress, **kw
    )
    for line in summary.lines():
        print(line)
    return 0
