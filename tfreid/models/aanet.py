"""AANet: Attention-Aligned Network (Lian, Jiang, Hu, TCSVT 2020) as a Keras functional model."""

from __future__ import annotations

import numbers

import keras

from tfreid.checks import check_input_shape
from tfreid.layers.attention_alignment import AttentionAlignment
from tfreid.layers.multi_scale_spatial_attention import LAYOUTS
from tfreid.layers.omnibearing_attention import OmnibearingAttention
from tfreid.layers.validation import check_bool, check_positive_int
from tfreid.models.backbones.resnet50 import (STAGE_BLOCKS, resnet50_model, resnet50_stage,
                                                 resnet50_stem)
from tfreid.models.blocks import ChannelMean
from tfreid.models.registry import register_model

# The 16 residual blocks of ResNet-50 in network order (Keras names, stage s = conv{s+1}).
BLOCK_NAMES = tuple(f"conv{s + 1}_block{b}" for s, n in STAGE_BLOCKS.items() for b in range(1, n + 1))
OFA_MODES = ("parallel", "series", "dense")
MASK_TARGETS = ("residual", "output")


def _check_ofa_blocks(num_ofa, ofa_blocks):
    if ofa_blocks is None:
        if isinstance(num_ofa, bool) or not isinstance(num_ofa, numbers.Integral) or not 0 <= num_ofa <= 16:
            raise ValueError(f"`num_ofa` must be an integer in [0, 16] (ResNet-50 has 16 residual blocks), "
                             f"received num_ofa={num_ofa!r}.")
        return BLOCK_NAMES[len(BLOCK_NAMES) - int(num_ofa):] if num_ofa else ()
    if isinstance(ofa_blocks, str) or not all(isinstance(b, str) for b in ofa_blocks):
        raise ValueError(f"`ofa_blocks` must be a list of block names, received ofa_blocks={ofa_blocks!r}.")
    bad = [b for b in ofa_blocks if b not in BLOCK_NAMES]
    if bad or len(set(ofa_blocks)) != len(ofa_blocks):
        raise ValueError(f"`ofa_blocks` must name distinct ResNet-50 blocks ({BLOCK_NAMES[0]} .. "
                         f"{BLOCK_NAMES[-1]}), received ofa_blocks={list(ofa_blocks)!r}.")
    return tuple(b for b in BLOCK_NAMES if b in ofa_blocks)  # network order


def _stride(source, target, what):
    """Integer stride taking spatial size `source` to `target` (ceil semantics)."""
    (h0, w0), (h1, w1) = source, target
    for s in (1, 2, 4, 8):
        if -(-h0 // s) == h1 and -(-w0 // s) == w1:
            return s
    raise ValueError(f"{what}: cannot map a {h0}x{w0} map onto {h1}x{w1} with a stride")


class _OFAPlacement:
    """Runs OFA beside (or after) chosen blocks: ``on_residual`` masks a block's residual branch
    before its shortcut add, ``after_block`` masks the block output (hooks of `resnet50_stage`)."""

    def __init__(self, blocks, mode, mask_target, kwargs, outputs):
        self.index = {name: k for k, name in enumerate(blocks, 1)}
        self.mode, self.mask_target, self.kwargs, self.outputs = mode, mask_target, kwargs, outputs
        self.maps = []  # dense mode: the attention maps produced so far

    def on_residual(self, name, block_input, residual):
        if self.mask_target != "residual" or name not in self.index:
            return residual
        return self._mask(name, block_input, residual)

    def after_block(self, name, block_input, block_output):
        if self.mask_target != "output" or name not in self.index:
            return block_output
        return self._mask(name, block_input, block_output)

    def _mask(self, name, block_input, target):
        k = self.index[name]
        out_hw, filters = tuple(target.shape[1:3]), target.shape[-1]
        if self.mode == "series":  # AANet-2 (Table 4): attention on the block's own output
            source, strides = target, 1
        else:  # Eq. 2: f(F_in) * A(F_in)
            source = block_input
            strides = _stride(block_input.shape[1:3], out_hw, f"ofa{k} ({name})")
            if self.mode == "dense" and self.maps:
                source = keras.layers.Add(name=f"ofa{k}_dense_add")(
                    [source] + [self._project(j, a, source, k) for j, a in enumerate(self.maps, 1)])
        attention = OmnibearingAttention(filters, strides=strides, name=f"ofa{k}", **self.kwargs)(source)
        self.maps.append(attention)
        self.outputs[f"attention/ofa{k}"] = ChannelMean(name=f"ofa{k}_map", dtype="float32")(attention)
        return keras.layers.Multiply(name=f"ofa{k}_apply")([target, attention])

    @staticmethod
    def _project(j, attention, target, k):
        """DenseOFA: an earlier map of another shape (across a stage boundary) enters through a
        1x1 conv with the stride between the two maps; same-shaped maps are added as they are."""
        if tuple(attention.shape[1:]) == tuple(target.shape[1:]):
            return attention
        strides = _stride(attention.shape[1:3], target.shape[1:3], f"ofa{k} dense input from ofa{j}")
        return keras.layers.Conv2D(target.shape[-1], 1, strides=strides, use_bias=False,
                                   name=f"ofa{k}_from_ofa{j}")(attention)


@register_model("aanet", small={"input_shape": (96, 32, 3), "base_width": 8})
def build_aanet(
    num_classes: int,
    input_shape=(384, 192, 3),
    num_parts: int = 6,
    num_ofa: int = 6,
    ofa_blocks=None,
    ofa_mode: str = "parallel",
    mask_target: str = "output",
    msa_layout: str = "compact",
    use_fca: bool = True,
    use_msa: bool = True,
    use_aam: bool = True,
    reduction: int = 16,
    spatial_reduction: int = 16,
    alignment_length: int | None = None,
    height_threshold: float = 0.3,
    width_threshold: float = 0.3,
    last_stride: int = 1,
    base_width: int = 64,
    backbone_weights: str | None = None,
    zero_init_residual: bool = True,
    name: str = "aanet",
) -> keras.Model:
    """Builds AANet: ResNet-50 with OFA attention, part classifiers and attention alignment.

    Graph (Fig. 2, 3, 5):

    - ResNet-50 (`tfreid.models.backbones.resnet50`, Keras layer names ``conv1_conv`` ..
      ``conv5_block3_out``), stage 4 with stride ``last_stride`` (1: 24x12 maps at 384x192).
    - OFA ``ofa{k}`` (`OmnibearingAttention`), ``k = 1..`` in network order, beside each chosen
      residual block: ``ofa{k}_apply`` = block output x ``ofa{k}``(block input) (Eq. 2,
      ``ofa_mode="parallel"``, ``mask_target="output"``); ``mask_target="residual"`` multiplies
      the block's residual branch instead, before its shortcut is added. ``"series"`` computes
      the map from the tensor it multiplies (AANet-2, Table 4); ``"dense"`` adds every earlier
      map to the block input first (``ofa{k}_dense_add``; maps of another shape through a 1x1
      conv ``ofa{k}_from_ofa{j}``, AANet-DenseOFA). ``ofa{k}_map`` is its channel mean.
    - Parts (Sec. 3.4): ``part{z}_crop`` takes horizontal stripe ``z`` of the last map (PCB's
      adaptive bins), ``part{z}_pool`` averages it (``C`` = 2048 features) and
      ``classifier_part{z}`` gives its identity logits.
    - Holistic (training only): ``global_pool`` (GAP) is the improved-TriHard feature;
      ``classifier_global`` is the holistic identity classifier: with AAM an
      `AttentionAlignment` layer (the classifier plus the alignment vectors of every class from
      its CAMs), without AAM a Dense layer with the same ``kernel`` and ``bias``.
    - ``embedding`` = the part features concatenated, part-major (``num_parts * C`` = 12288-D),
      compared with the cosine distance.

    Two readings the paper leaves open (``docs/models.md``): MSA's ``msa_layout`` (``"compact"``:
    6 OFA add 9.6 M parameters / 2.3 GMACs at 767 classes and 384x192, Table 5's +9.8 M /
    +2.2 G; ``"literal"``: +23.1 M / +6.2 G) and where the mask applies (``mask_target``:
    ``"output"`` reads Eq. 2's ``f(F_in, {W})`` as the block's mapping, ``"residual"`` as He et
    al.'s residual function; "output" trained better in a short synthetic comparison).
    Args:
        num_classes: number of training identities.
        input_shape: ``(H, W, 3)`` of the normalised input. Default ``(384, 192, 3)`` (paper).
        num_parts: horizontal stripes, each with its classifier. Default 6.
        num_ofa: OFA modules beside the LAST ``num_ofa`` residual blocks (0..16). Default 6
            (``conv4_block4`` .. ``conv5_block3``, Fig. 6(a)).
        ofa_blocks: explicit block names instead of ``num_ofa`` (Table 4's ``Conv.B3`` is
            ``["conv4_block1", ..., "conv4_block6"]``).
        ofa_mode: ``"parallel"`` (paper), ``"series"`` or ``"dense"``.
        mask_target: ``"output"`` (default: the map multiplies the block output) or
            ``"residual"`` (the block's residual branch, before the shortcut add).
        msa_layout: ``"compact"`` (default, Table 5's size) or ``"literal"``
            (`MultiScaleSpatialAttention`).
        use_fca: OFA includes foreground-aware channel attention (ablation). Default True.
        use_msa: OFA includes multi-scale spatial attention (ablation). Default True. With both
            off there are no OFA modules.
        use_aam: output the alignment vectors for ACD (``"alignment"``). Default True.
        reduction: FCA reduction rate. Default 16.
        spatial_reduction: MSA reduction rate. Default 16 (paper).
        alignment_length: length of the alignment vectors; default the last map height.
        height_threshold: ``T_h``. Default 0.3 (paper, Fig. 6(b)).
        width_threshold: ``T_w``. Default 0.3 (paper).
        last_stride: stride of stage 4, 1 (default, 2x larger last maps) or 2.
        base_width: ResNet width (64 = ResNet-50; smaller for tests, same graph).
        backbone_weights: optional local ImageNet ``.h5`` loaded into the backbone by layer name,
            or ``"imagenet"`` (Keras's ResNet-50 file, downloaded once and cached).
        zero_init_residual: start every residual block as the identity (gamma of its last BN
            = 0): the from-scratch ResNet-50 then learns within a few epochs (Goyal et al.
            2017); loaded ``backbone_weights`` overwrite it. Default True.
        name: model name.

    Returns:
        Functional `keras.Model` mapping ``[B, H, W, 3]`` images to a dict of float32 tensors:
        ``embedding`` ``[B, num_parts * C]``, ``logits/part1`` .. ``logits/part{num_parts}`` and
        ``logits/global`` ``[B, num_classes]``, ``features/global`` ``[B, C]``, ``alignment``
        ``[B, num_classes, L]`` (with AAM) and ``attention/ofa{k}`` ``[B, h_k, w_k, 1]``.

    Example:

    >>> model = build_aanet(751)
    >>> out = model(keras.ops.zeros((2, 384, 192, 3)))
    >>> out["embedding"].shape, out["alignment"].shape
    ((2, 12288), (2, 751, 24))

    Reference:
        S. Lian, W. Jiang, H. Hu, "Attention-Aligned Network for Person Re-Identification",
        IEEE TCSVT 2020, Sec. 3, Fig. 2-5; Y. Sun et al., "Beyond Part Models" (PCB), ECCV 2018.
    """
    num_classes = check_positive_int("num_classes", num_classes)
    num_parts = check_positive_int("num_parts", num_parts)
    for key, value in (("use_fca", use_fca), ("use_msa", use_msa), ("use_aam", use_aam),
                       ("zero_init_residual", zero_init_residual)):
        check_bool(key, value)
    if ofa_mode not in OFA_MODES:
        raise ValueError(f"`ofa_mode` must be one of {', '.join(OFA_MODES)}, received ofa_mode={ofa_mode!r}.")
    if mask_target not in MASK_TARGETS:
        raise ValueError(f"`mask_target` must be one of {', '.join(MASK_TARGETS)}, "
                         f"received mask_target={mask_target!r}.")
    if msa_layout not in LAYOUTS:
        raise ValueError(f"`msa_layout` must be one of {', '.join(LAYOUTS)}, received msa_layout={msa_layout!r}.")
    if last_stride not in (1, 2) or isinstance(last_stride, bool):
        raise ValueError(f"`last_stride` must be 1 or 2, received last_stride={last_stride!r}.")
    input_shape = check_input_shape(input_shape)
    # ResNet-50 maps: /4 after the stem, /2 in stages 2 and 3, /last_stride in stage 4 (ceil)
    h = -(-int(input_shape[0]) // (16 * last_stride))
    if num_parts > h:
        raise ValueError(f"`num_parts`={num_parts} exceeds the height {h} of the last feature map "
                         f"(input {tuple(input_shape)}); use fewer parts or a taller input.")
    if use_aam:  # fail before the (slow) graph construction
        AttentionAlignment(num_classes, length=alignment_length, height_threshold=height_threshold,
                           width_threshold=width_threshold)
    blocks = _check_ofa_blocks(num_ofa, ofa_blocks) if (use_fca or use_msa) else ()
    ofa_kwargs = dict(reduction=check_positive_int("reduction", reduction),
                      spatial_reduction=check_positive_int("spatial_reduction", spatial_reduction),
                      use_fca=use_fca, use_msa=use_msa, msa_layout=msa_layout)

    inputs = keras.Input(shape=tuple(int(v) for v in input_shape), name="images")
    outputs = {}
    hook = _OFAPlacement(blocks, ofa_mode, mask_target, ofa_kwargs, outputs)
    x = resnet50_stem(inputs, base_width)
    for stage in STAGE_BLOCKS:
        x = resnet50_stage(x, stage, last_stride if stage == 4 else None, base_width,
                           after_block=hook.after_block, on_residual=hook.on_residual)
    assert x.shape[1] == h, (x.shape, h)

    parts = []
    for z in range(1, num_parts + 1):
        # PCB's adaptive bins: rows [floor((z-1) H / P), ceil(z H / P)), exact stripes when P | H
        top, bottom = (z - 1) * h // num_parts, -(-z * h // num_parts)
        part = keras.layers.Cropping2D(((top, h - bottom), (0, 0)), name=f"part{z}_crop")(x)
        parts.append(keras.layers.GlobalAveragePooling2D(name=f"part{z}_pool", dtype="float32")(part))
        outputs[f"logits/part{z}"] = keras.layers.Dense(num_classes, name=f"classifier_part{z}",
                                                        dtype="float32")(parts[-1])
    outputs["features/global"] = keras.layers.GlobalAveragePooling2D(name="global_pool", dtype="float32")(x)
    if use_aam:
        outputs["logits/global"], outputs["alignment"] = AttentionAlignment(
            num_classes, length=alignment_length, height_threshold=height_threshold,
            width_threshold=width_threshold, name="classifier_global", dtype="float32")(x)
    else:
        outputs["logits/global"] = keras.layers.Dense(num_classes, name="classifier_global",
                                                      dtype="float32")(outputs["features/global"])
    outputs["embedding"] = keras.layers.Concatenate(name="embedding", dtype="float32")(parts)
    return resnet50_model(inputs, outputs, name, zero_init_residual, backbone_weights)
