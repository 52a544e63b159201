"""Class names, palette and normalisation of the 3-class tiny deploy models used by tests."""

CLASSES = ["road", "sky", "car"]
META = {
    "num_classes": 3,
    "classes": CLASSES,
    "palette": [[128, 64, 128], [70, 130, 180], [0, 0, 142]],
    "mean": [123.675, 116.28, 103.53],
    "std": [58.395, 57.12, 57.375],
    "resize": [96, 64],
}
