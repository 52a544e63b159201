"""Evaluation: IoU accumulation, whole/sliding-window inference, folder scoring, prediction output."""

from duda.evaluation.evaluate import accumulate, evaluate, match_folders, read_label_png, score_folders
from duda.evaluation.metrics import EvalResult, IoUMetric, write_result_json
from duda.evaluation.predict import keep_ratio_size, predict_images
from duda.evaluation.visualize import colorize, make_grid, overlay, save_png
from duda.inference.modes import infer, infer_slide, infer_whole

__all__ = [
    "EvalResult",
    "IoUMetric",
    "accumulate",
    "colorize",
    "evaluate",
    "infer",
    "infer_slide",
    "infer_whole",
    "keep_ratio_size",
    "make_grid",
    "match_folders",
    "overlay",
    "predict_images",
    "read_label_png",
    "save_png",
    "score_folders",
    "write_result_json",
]
