"""A sixth model, added as any model is: this builder and its default recipe, toy.yaml.

Inside tfreid the builder would be `tfreid/models/toy.py` and the recipe `tfreid/recipes/
toy.yaml` (found by name); registered from outside, the recipe is passed to `register_model`.
"""

import pathlib

import keras

from tfreid.models import register_model


@register_model("toy", recipe=pathlib.Path(__file__).with_name("toy.yaml"))
def build_toy(num_classes: int, input_shape=(32, 16, 3), width: int = 8, name: str = "toy"):
    """conv -> global average pool -> features; a classifier and an L2-normalised embedding."""
    images = keras.Input(input_shape, name="images")
    x = keras.layers.Conv2D(width, 3, strides=2, activation="relu", name="conv")(images)
    features = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = keras.layers.Dense(num_classes, name="classifier")(features)
    embedding = keras.layers.UnitNormalization(name="embedding")(features)
    return keras.Model(images, {"embedding": embedding, "features/global": features,
                                "logits/global": logits}, name=name)
