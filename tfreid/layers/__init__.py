"""Public attention layers, all registered as Keras serializables under the "tfreid" package."""

from tfreid.layers.channel_attention import SoftChannelAttention
from tfreid.layers.conv_bn_relu import ConvBNReLU
from tfreid.layers.hard_attention import HardRegionAttention
from tfreid.layers.harmonious_attention import HarmoniousAttention
from tfreid.layers.region_sampler import RegionSampler
from tfreid.layers.soft_attention import SoftAttention
from tfreid.layers.spatial_attention import SoftSpatialAttention

__all__ = [
    "ConvBNReLU",
    "HardRegionAttention",
    "HarmoniousAttention",
    "RegionSampler",
    "SoftAttention",
    "SoftChannelAttention",
    "SoftSpatialAttention",
]
