"""Segmentation models: MiT / ResNet backbones, DAFormer / SegFormer / DeepLab heads, a factory.

```python
model = build_model("daformer_mitb5", num_classes=19, pretrained="nvidia/mit-b5")
logits = model(x)                               # B×K×H/s×W/s, s = model.output_stride
logits, feats = model(x, return_features=True)  # feats: last encoder stage
```
"""

from duda.models.factory import (
    allowed_overrides,
    build_from_spec,
    build_model,
    build_network,
    count_flops,
    count_parameters,
    list_models,
)
from duda.models.segmentor import SegmentationModel

__all__ = [
    "SegmentationModel",
    "allowed_overrides",
    "build_from_spec",
    "build_model",
    "build_network",
    "count_flops",
    "count_parameters",
    "list_models",
]
