"""duda: distilled unsupervised domain adaptation for lightweight semantic segmentation."""

__version__ = "0.1.0"
