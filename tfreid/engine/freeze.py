"""Freezing the backbone for the first epochs of a run (ADFL's strong baseline: 5 epochs).

With ImageNet weights, the randomly initialised heads (bottleneck, BNNeck, classifiers,
attention) would send large, noisy gradients into the pretrained backbone during the first
steps; freezing it until the heads have settled protects those features (ADFL Table I: "not fix
backbone" costs 1.6 mAP on M->M, 3.8 on M->D).

"Frozen" is Keras's ``trainable = False`` on each backbone layer: its weights are left out of the
trainable variables (no gradient, no optimizer update, no weight decay) and its BatchNorm layers
normalise with their moving statistics, which therefore do not change either. The trainer
retraces its step when the set of trainable variables changes (`Trainer` ``epoch_hook``).
"""

from __future__ import annotations

import re

import keras

# keras.applications.ResNet50 layer names (tfreid.models.backbones.resnet50), optionally with a
# per-branch prefix such as "part3_": stem conv1_*, pool1_*, and the conv2..conv5 residual blocks.
RESNET50_PATTERN = r"^(?:\w+_)?(?:conv1_(?:pad|conv|bn|relu)|pool1_(?:pad|pool)|conv[2-5]_block\d+_\w+)$"


def backbone_layers(model: keras.Model, pattern: str = RESNET50_PATTERN) -> list[keras.layers.Layer]:
    """The layers of `model` whose name matches `pattern` (default: the ResNet-50 backbone)."""
    regex = re.compile(pattern)
    return [layer for layer in model.layers if regex.match(layer.name)]


class BackboneFreezer:
    """Epoch hook: backbone layers untrainable for epochs ``0 .. epochs - 1``, trainable after.

    Args:
        epochs: number of leading epochs with a frozen backbone (>= 0; 0 = never frozen).
        pattern: regular expression selecting the backbone layers by name.

    Call arguments:
        model: the trained `keras.Model`.
        epoch: the (0-based) epoch about to start (also the epoch a resumed run continues in).

    Returns:
        True if the hook changed which variables are trainable (the train step must be
        retraced), else False.

    Raises:
        ValueError: ``epochs > 0`` and no layer of the model matches `pattern`.

    Example:

    >>> freeze = BackboneFreezer(5)
    >>> trainer = Trainer(..., epoch_hook=freeze)  # doctest: +SKIP

    Reference:
        H. Liu, J. Cheng, S. Wang, W. Wang, "Attention: A Big Surprise for Cross-Domain Person
        Re-Identification", arXiv 2019, Sec. V-B ("layers in backbone network are fixed for 5
        epochs firstly"), Table I.
    """

    def __init__(self, epochs: int, pattern: str = RESNET50_PATTERN):
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"`epochs` (train.freeze_backbone_epochs) must be an integer >= 0, "
                             f"received {epochs!r}.")
        self.epochs = epochs
        self.pattern = pattern
        self._layers = None

    def __call__(self, model: keras.Model, epoch: int) -> bool:
        if self.epochs == 0:
            return False
        if self._layers is None:
            self._layers = backbone_layers(model, self.pattern)
            if not self._layers:
                raise ValueError(f"train.freeze_backbone_epochs={self.epochs}, but no layer of model "
                                 f"{model.name!r} matches the backbone pattern {self.pattern!r} "
                                 "(a model without a ResNet-50 backbone cannot be frozen).")
        trainable = epoch >= self.epochs
        changed = any(layer.trainable != trainable for layer in self._layers)
        for layer in self._layers:
            layer.trainable = trainable
        if changed:
            state = "trainable again" if trainable else "frozen"
            print(f"backbone ({len(self._layers)} layers) {state} from epoch {epoch + 1}")
        return changed
