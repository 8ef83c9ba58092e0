"""The ADFL strong baseline: ResNet-50 (last stride 1), global max pooling, BNNeck."""

from __future__ import annotations

import keras

from tfreid.models.adfl import build_adfl
from tfreid.models.registry import register_model


@register_model("baseline", small={"input_shape": (64, 32, 3), "base_width": 8, "bottleneck_dim": 64})
def build_baseline(num_classes: int, input_shape=(384, 128, 3), bottleneck_dim: int | None = 1024,
                   last_stride: int = 1, base_width: int = 64, backbone_weights: str | None = None,
                   zero_init_residual: bool = True, name: str = "baseline") -> keras.Model:
    """Builds the ADFL strong baseline: ResNet-50 (last stride 1), global max pooling, BNNeck.

    The black-line path of ADFL Fig. 2 (Sec. III-A): `build_adfl` without attention modules and
    without the AF skip. Layers and outputs as in `build_adfl`: ``global_pool`` (max) ->
    ``bottleneck`` -> ``features/global`` (triplet) -> ``bnneck_global`` = ``embedding`` ->
    ``classifier_global`` = ``logits/global``.

    Args:
        num_classes: number of training identities.
        input_shape: ``(H, W, 3)``. Default ``(384, 128, 3)`` (paper; Table I also 256x128).
        bottleneck_dim: bottleneck FC width or None. Default 1024 (paper).
        last_stride: stride of stage 4, 1 (default) or 2.
        base_width: ResNet width (64 = ResNet-50; smaller for tests, same graph).
        backbone_weights: optional local ImageNet ``.h5`` loaded into the backbone by layer name,
            or ``"imagenet"`` (Keras's ResNet-50 file, downloaded once and cached).
        zero_init_residual: as in `build_adfl`. Default True.
        name: model name.

    Returns:
        Functional `keras.Model`: ``embedding`` ``[B, bottleneck_dim]`` (post-BN),
        ``features/global`` (pre-BN), ``logits/global``; all float32.

    Example:

    >>> build_baseline(751).output["embedding"].shape
    (None, 1024)

    Reference:
        H. Liu, J. Cheng, S. Wang, W. Wang, "Attention: A Big Surprise for Cross-Domain Person
        Re-Identification", arXiv 2019, Sec. III-A, V-C, Table I; H. Luo et al., "Bag of Tricks
        and a Strong Baseline for Deep Person Re-identification", CVPRW 2019.
    """
    return build_adfl(num_classes, input_shape=input_shape, attention=None, af_stage=None,
                      bottleneck_dim=bottleneck_dim, last_stride=last_stride, base_width=base_width,
                      backbone_weights=backbone_weights, zero_init_residual=zero_init_residual,
                      name=name)
