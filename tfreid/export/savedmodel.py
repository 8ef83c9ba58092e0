"""SavedModel export in the TF Serving layout: `<root>/<model>/<version>/`.

Signatures (preprocessing lives inside the graph, so clients send raw pixels or files):
- `serving_default`: float32 images `[None, H, W, 3]`, RGB in 0..255 -> `{"embedding": [None, D]}`;
- `serve_bytes`: string `[None]` of encoded JPEG/PNG/BMP/GIF -> decode, resize to `H x W`,
  normalise -> `{"embedding": [None, D]}` (a REST client posts base64 images).
`assets/tfreid.json` records what a consumer needs: model name, input size, embedding size,
distance, preprocessing and the run's metrics.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import tempfile

import keras
import tensorflow as tf

from tfreid.checks import check_int
from tfreid.data.pipeline import load_batch
from tfreid.preprocessing import IMAGENET_MEAN, IMAGENET_STD, decode_resize, normalize
from tfreid.runs import write_json


def next_version(model_dir: str | pathlib.Path) -> int:
    """The next free numeric version under `model_dir` (1 when empty)."""
    model_dir = pathlib.Path(model_dir)
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def new_version_path(model_dir: str | pathlib.Path, version: int) -> pathlib.Path:
    """`<model_dir>/<version>`, checked to be a positive integer that does not exist yet.

    Raises:
        ValueError: `version` is not a positive integer.
        FileExistsError: that version already exists (exports never overwrite).
    """
    target = pathlib.Path(model_dir) / str(check_int("version", version))
    if target.exists():
        raise FileExistsError(f"{target} already exists; exports never overwrite a version")
    return target


@contextlib.contextmanager
def version_dir(model_dir: str | pathlib.Path, version: int):
    """Write a version folder atomically: yields a temporary folder, renamed to
    `<model_dir>/<version>` when the block succeeds (removed if it fails).

    Raises:
        ValueError: `version` is not a positive integer.
        FileExistsError: that version already exists (exports never overwrite).
    """
    target = new_version_path(model_dir, version)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        yield tmp
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _pixel_checks(images, height: int, width: int) -> list:
    """Assertions that `images` is float ``[N, height, width, 3]`` with finite values: a served
    signature does not enforce its declared shape (a 1-channel image would broadcast)."""
    shape = tf.shape(images)
    padded = tf.concat([shape, tf.zeros([4], tf.int32)], 0)  # rank < 4 cannot index [1:4]
    shape_ok = tf.logical_and(tf.size(shape) == 4,
                              tf.reduce_all(tf.equal(padded[1:4], [height, width, 3])))
    shape_check = tf.debugging.Assert(shape_ok, [
        f"serving_default: images must be float32 [N, {height}, {width}, 3] RGB 0..255; got "
        "shape", shape], summarize=8)
    with tf.control_dependencies([shape_check]):  # is_finite needs a valid tensor first
        finite = tf.reduce_all(tf.math.is_finite(tf.cast(images, tf.float32)))
    finite_check = tf.debugging.Assert(finite, [
        "serving_default: images hold NaN or Inf pixel values; expected finite RGB 0..255"])
    return [shape_check, finite_check]


def export_savedmodel(embed: keras.Model, root: str | os.PathLike, model_name: str,
                      image_size: tuple[int, int], *, version: int | None = None,
                      metadata: dict | None = None) -> pathlib.Path:
    """Write `embed` (normalised images -> embedding) as `<root>/<model_name>/<version>/`.

    The version folder is written under a temporary name and renamed into place, so TF Serving
    (which polls for new numeric folders) never sees a half-written model. Existing versions are
    never overwritten.

    Returns:
        The path of the new version folder.
    """
    height, width = (int(v) for v in image_size)
    model_dir = pathlib.Path(root) / model_name
    version = next_version(model_dir) if version is None else version
    target = new_version_path(model_dir, version)  # fail before the (slow) tracing

    # One tf.function shared by both endpoints: the network is traced (and stored) once, which
    # halves the export time of the bigger models.
    @tf.function(input_signature=[tf.TensorSpec((None, height, width, 3), tf.float32,
                                                name="images")])
    def embed_pixels(images):
        with tf.control_dependencies(_pixel_checks(images, height, width)):
            features = embed(normalize(tf.cast(images, tf.float32)), training=False)
        return {"embedding": tf.cast(features, tf.float32)}

    def embed_bytes(encoded):
        # Fail with a message naming the signature and the bad elements (TF Serving returns it
        # as a 400 INVALID_ARGUMENT to that request; the server keeps running).
        head = tf.strings.substr(encoded, 0, 4)
        known = tf.reduce_any(tf.stack([
            tf.strings.substr(head, 0, 3) == b"\xff\xd8\xff", head == b"\x89PNG",
            head == b"GIF8", tf.strings.substr(head, 0, 2) == b"BM"]), axis=0)
        check = tf.debugging.Assert(tf.reduce_all(known), [
            "serve_bytes: image_bytes must be encoded JPEG/PNG/BMP/GIF images; not an image at "
            "indices", tf.where(~known)[:, 0], "first bytes", tf.boolean_mask(head, ~known)],
            summarize=16)
        with tf.control_dependencies([check]):
            encoded = tf.identity(encoded)
        # Each item decoded on its own (truncated or garbage data fails only its own slot), so
        # the error names every failing index instead of "jpeg::Uncompress failed".
        images, ok = load_batch(encoded, (height, width), decode_resize).get_single_element()
        check = tf.debugging.Assert(tf.reduce_all(ok), [
            "serve_bytes: image_bytes items cannot be decoded (truncated or corrupt image data) "
            "at indices", tf.where(~ok)[:, 0]], summarize=16)
        with tf.control_dependencies([check]):
            return embed_pixels(tf.identity(images))

    archive = keras.export.ExportArchive()
    archive.track(embed)
    embed_pixels.get_concrete_function()
    archive.add_endpoint("serving_default", embed_pixels)
    archive.add_endpoint("serve_bytes", embed_bytes, input_signature=[
        tf.TensorSpec((None,), tf.string, name="image_bytes")])

    with version_dir(model_dir, version) as tmp:
        archive.write_out(str(tmp), verbose=False)
        info = {
            "model": model_name,
            "input_size": [height, width],
            "input": "float32 RGB 0..255 [N, H, W, 3] (serving_default) or encoded images "
                     "(serve_bytes)",
            "embedding_size": int(embed.output.shape[-1]),
            "preprocessing": {"resize": "bilinear", "scale": 1 / 255.0,
                              "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
            **(metadata or {}),
        }
        (tmp / "assets").mkdir(exist_ok=True)
        write_json(tmp / "assets" / "tfreid.json", info)
    return target
