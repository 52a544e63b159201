"""Deprecated: moved to :mod:`duda.inference`; nothing inside duda imports this alias."""

from duda.inference import InferenceModel, dataset_meta, load_inference_model, save_deploy_model

__all__ = ["InferenceModel", "dataset_meta", "load_inference_model", "save_deploy_model"]
