"""Public attention layers, all registered as Keras serializables under the "tfreid" package."""

from tfreid.layers.adaptive_concat_pooling import AdaptiveConcatPooling2D
from tfreid.layers.attention_arrangement import AttentionArrangement
from tfreid.layers.batch_attention import BatchAttention
from tfreid.layers.attention_alignment import AttentionAlignment
from tfreid.layers.channel_attention import SoftChannelAttention
from tfreid.layers.channel_self_attention import ChannelSelfAttention
from tfreid.layers.collaborative_attention import CollaborativeAttention
from tfreid.layers.cosine_classifier import CosineClassifier
from tfreid.layers.direct_channel_attention import DirectChannelAttention
from tfreid.layers.direct_hyper_attention import DirectHyperAttention
from tfreid.layers.direct_spatial_attention import DirectSpatialAttention
from tfreid.layers.hyper_attention import HyperAttention
from tfreid.layers.position_attention import PositionAttention
from tfreid.layers.conv_bn_relu import ConvBNReLU
from tfreid.layers.cross_correlated_attention import CrossCorrelatedAttention
from tfreid.layers.non_local_attention import NonLocalAttention
from tfreid.layers.symmetric_self_attention import SymmetricSelfAttention
from tfreid.layers.foreground_channel_attention import ForegroundChannelAttention
from tfreid.layers.fused_batch_normalization import FusedBatchNormalization
from tfreid.layers.hard_attention import HardRegionAttention
from tfreid.layers.harmonious_attention import HarmoniousAttention
from tfreid.layers.multi_scale_spatial_attention import MultiScaleSpatialAttention
from tfreid.layers.omnibearing_attention import OmnibearingAttention
from tfreid.layers.padded_pooling import PaddedPooling2D
from tfreid.layers.region_sampler import RegionSampler
from tfreid.layers.soft_attention import SoftAttention
from tfreid.layers.spatial_attention import SoftSpatialAttention

__all__ = [
    "AdaptiveConcatPooling2D",
    "CollaborativeAttention",
    "CosineClassifier",
    "AttentionArrangement",
    "BatchAttention",
    "ChannelSelfAttention",
    "DirectChannelAttention",
    "DirectHyperAttention",
    "DirectSpatialAttention",
    "HyperAttention",
    "PositionAttention",
    "AttentionAlignment",
    "ConvBNReLU",
    "CrossCorrelatedAttention",
    "NonLocalAttention",
    "SymmetricSelfAttention",
    "ForegroundChannelAttention",
    "FusedBatchNormalization",
    "HardRegionAttention",
    "HarmoniousAttention",
    "MultiScaleSpatialAttention",
    "OmnibearingAttention",
    "PaddedPooling2D",
    "RegionSampler",
    "SoftAttention",
    "SoftChannelAttention",
    "SoftSpatialAttention",
]
