"""Published DAFormer / MIC / HRDA (mmseg) checkpoints: read them safely, recognise, convert to our models.

Modules: ``read`` (the file, safely; recognising it), ``arch`` (architecture inference from the
weights), ``keys`` (key mapping), ``networks`` (models for inference, run initialisation and deploy
folders).

The reference code saves ``latest.pth`` with mmcv's ``save_checkpoint``: ``{"meta": ...,
"state_dict": ..., "optimizer": ...}``. For a UDA run the state dict holds up to three
``EncoderDecoder`` networks: ``model.*`` (the trained network, the one the reference evaluates),
``ema_model.*`` (its EMA teacher) and ``imnet_model.*`` (the frozen ImageNet model of the feature
distance). A plain mmseg run holds one network without a prefix (``backbone.*``,
``decode_head.*``).

Supported architectures (the layout follows the reference module names):

- backbone MiT (``MixVisionTransformer``, ``patch_embed{s}``, ``block{s}.{j}``, ``norm{s}``):
  mapped by :func:`duda.models.pretrained.mit_checkpoint_to_backbone` (fused ``kv`` split into key
  and value). The variant (B0..B5) is recognised from the stage widths and block counts.
- head ``DAFormerHead`` with the separable-ASPP fusion (the published DAFormer / MIC head,
  ``configs/_base_/models/daformer_sepaspp_mitb5.py``) -> our ``daformer_*`` models;
  ``DAFormerHead`` with a 1x1 conv fusion (``daformer_conv1_mitb5.py``) and the DAFormer repository's
  ``SegFormerHead`` -> our ``segformer_*`` models (same function; the fused channels are reordered
  because the reference concatenates the finest level first and our SegFormer head the coarsest).
- ``DLV2Head`` on ``ResNetV1c`` (DAFormer's ``deeplabv2red``): only when this installation has the
  ``deeplabv2red_r101`` model; the backbone keys go through
  :func:`duda.models.pretrained.resnet_checkpoint_to_backbone`.
- HRDA and MIC(HRDA) (``HRDAEncoderDecoder`` + ``HRDAHead``): ``decode_head.head.*`` is the
  single-scale head (any of the above that the reference's HRDAHead takes: DAFormerHead or
  DLV2Head), ``decode_head.scale_attention.*`` the scale-attention head (for DAFormerHead the same
  embeddings, ``attention_embed_dim`` wide, with a 1x1 conv fusion) -> our
  :class:`~duda.models.hrda.HRDAModel` (``head.seg.*``, ``head.attention.*``). What its weights show
  (class-wise attention or one map, the attention width) is taken from them; the multi-resolution
  settings (``scales``, ``hr_crop_size``, ``hr_slide_inference``, ...) from the mmcv config text in
  ``meta['config']`` when it is there (parsed with :mod:`ast` as data, never executed), else the
  published GTA->Cityscapes HRDA settings (:class:`~duda.models.hrda.MultiResSpec` defaults), with a
  warning.

Not supported, with an error naming the keys: ASPP fusions with image pooling or non-separable 3x3
branches, other heads and backbones.

What the weights do not store is assumed from the published configs and reported as a note:
the ASPP dilations (1, 6, 12, 18) for 4 branches, DeepLabV2's (6, 12) / (6, 12, 18, 24), the MiT
attention heads (those of the recognised variant), normalisation (ImageNet mean/std on RGB).
"""

from duda.inference.formats.mmseg.arch import (
    ReferenceArch,
    hrda_settings,
    infer_architecture,
    is_hrda_head,
    reference_config_model,
    split_hrda_head,
)
from duda.inference.formats.mmseg.keys import check_fits, convert_network, load_converted
from duda.inference.formats.mmseg.networks import (
    HRDA_TEST_SCALE,
    REFERENCE_TEST_SCALE,
    ConversionResult,
    ReferenceInit,
    build_reference_model,
    convert_reference_checkpoint,
    reference_inference_model,
    reference_init_states,
    reference_labels,
    reference_test_scale,
)
from duda.inference.formats.mmseg.read import (
    NETWORK_ALIASES,
    NETWORKS,
    is_reference_checkpoint,
    network_state,
    read_reference_file,
    reference_networks,
    strip_command,
)

__all__ = [
    "HRDA_TEST_SCALE",
    "NETWORKS",
    "NETWORK_ALIASES",
    "REFERENCE_TEST_SCALE",
    "ConversionResult",
    "ReferenceArch",
    "ReferenceInit",
    "build_reference_model",
    "check_fits",
    "convert_network",
    "convert_reference_checkpoint",
    "hrda_settings",
    "infer_architecture",
    "is_hrda_head",
    "is_reference_checkpoint",
    "load_converted",
    "network_state",
    "read_reference_file",
    "reference_config_model",
    "reference_inference_model",
    "reference_init_states",
    "reference_labels",
    "reference_networks",
    "reference_test_scale",
    "split_hrda_head",
    "strip_command",
]
