"""Backbones shared by the models: ResNet-50 (CAN, ADFL, AANet), BN-Inception and Inception-v2 (CCAN)."""

from tfreid.models.backbones.bn_inception import (
    bn_inception_stage,
    bn_inception_stem,
    build_bn_inception,
)
from tfreid.models.backbones.inception_v2 import (
    build_inception_v2,
    inception_v2_stage,
    inception_v2_stem,
)
from tfreid.models.backbones.resnet50 import (
    STAGE_OUTPUTS,
    bottleneck_block,
    build_resnet50,
    resnet50_stage,
    resnet50_stem,
    zero_init_residuals,
)
from tfreid.models.backbones.weights import load_backbone_weights, read_weights_by_layer

__all__ = [
    "bn_inception_stage",
    "bn_inception_stem",
    "build_bn_inception",
    "build_inception_v2",
    "STAGE_OUTPUTS",
    "bottleneck_block",
    "build_resnet50",
    "inception_v2_stage",
    "inception_v2_stem",
    "load_backbone_weights",
    "read_weights_by_layer",
    "resnet50_stage",
    "resnet50_stem",
    "zero_init_residuals",
]
