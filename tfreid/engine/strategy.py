"""Distribution strategies for training: GPUs, or N logical CPU replicas on a CPU-only host.

On a machine without GPUs, ``configure_cpu_replicas(n)`` splits the CPU into ``n`` logical
devices so the multi-replica code path (per-replica batches, cross-replica gradient and
BatchNorm reductions) runs — and is tested — everywhere (DESIGN §4).

Example:
    >>> from tfreid.engine.strategy import configure_cpu_replicas, create_strategy
    >>> configure_cpu_replicas(2)          # before anything touches TF devices
    >>> strategy = create_strategy(2)      # MirroredStrategy over /cpu:0 and /cpu:1
    >>> strategy.num_replicas_in_sync
    2
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["configure_cpu_replicas", "create_strategy", "enable_sync_batchnorm"]


def _check_replicas(name: str, value, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer{' or None' if allow_none else ''}; "
                         f"received {value!r}.")


def configure_cpu_replicas(n: int) -> None:
    """Splits the (first) physical CPU into ``n`` logical devices.

    Must run before TensorFlow initialises its devices (i.e. before the first op, variable or
    ``tf.config.list_logical_devices`` call). Calling it again with the same ``n`` is a no-op.

    Args:
        n: number of logical CPU devices (>= 1). ``n == 1`` leaves the CPU unsplit.

    Raises:
        ValueError: ``n`` is not a positive integer.
        RuntimeError: TF devices are already initialised with a different logical CPU count.

    Example:
        >>> configure_cpu_replicas(2)
        >>> len(tf.config.list_logical_devices("CPU"))
        2
    """
    _check_replicas("n", n, allow_none=False)
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    # `None` means "never configured": one logical device per physical CPU.
    current_n = 1 if not current else len(current)
    if current_n == n:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError as err:
        initialised = len(tf.config.list_logical_devices("CPU"))
        raise RuntimeError(
            f"configure_cpu_replicas(n={n}): TensorFlow has already initialised its devices with "
            f"{initialised} logical CPU device(s); call configure_cpu_replicas before any other "
            "TensorFlow work (e.g. at the top of the entry point, or in a fresh process).",
        ) from err


def create_strategy(replicas: int | None = None) -> tf.distribute.Strategy:
    """Returns the distribution strategy for single-host training.

    * GPUs visible: ``MirroredStrategy`` over all GPUs, or over the first ``replicas`` of them.
    * CPU only, ``replicas`` in ``(None, 1)``: ``OneDeviceStrategy("/cpu:0")`` — it has a real
      replica context, so the training code path is the same as with N replicas.
    * CPU only, ``replicas = N > 1``: ``MirroredStrategy`` over N logical CPU devices created by
      :func:`configure_cpu_replicas` (called here if TF is not initialised yet), with
      ``ReductionToOneDevice`` (NCCL does not exist on CPU).

    Args:
        replicas: number of replicas, or ``None`` for "all GPUs / one CPU".

    Returns:
        A ``tf.distribute.Strategy``.

    Raises:
        ValueError: ``replicas`` is not a positive integer/None, or asks for more GPUs than exist.
        RuntimeError: CPU-only, ``replicas > 1`` and TF already initialised with fewer devices.

    Example:
        >>> strategy = create_strategy()
        >>> with strategy.scope():
        ...     model = build_model("hacnn", num_classes=751)
    """
    _check_replicas("replicas", replicas, allow_none=True)
    # Multi-worker (several hosts) will branch here on TF_CONFIG into
    # tf.distribute.MultiWorkerMirroredStrategy; the trainer only relies on the Strategy API.
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        if replicas is not None and replicas > len(gpus):
            raise ValueError(f"`replicas`={replicas} but only {len(gpus)} GPU(s) are visible.")
        n = len(gpus) if replicas is None else replicas
        devices = [f"/gpu:{i}" for i in range(n)]
        return tf.distribute.MirroredStrategy(devices=devices)
    if replicas in (None, 1):
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    configure_cpu_replicas(replicas)
    devices = [f"/cpu:{i}" for i in range(replicas)]
    return tf.distribute.MirroredStrategy(
        devices=devices, cross_device_ops=tf.distribute.ReductionToOneDevice())


def enable_sync_batchnorm(model: keras.Model) -> int:
    """Switches every Keras ``BatchNormalization`` layer of ``model`` to synchronized statistics.

    With synchronized BN the batch mean/variance are all-reduced over the replicas, so a global
    batch split over N replicas normalises exactly like the same batch on one replica (DESIGN §4).
    Nested models/layers are included. Safe to call after the model is built: the flag is read
    when the training step is traced.

    Args:
        model: a Keras model (or layer).

    Returns:
        The number of BatchNormalization layers switched.

    Example:
        >>> n = enable_sync_batchnorm(model)
    """
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(f"`model` must be a keras.Model/Layer; received {type(model).__name__}.")
    count = 0
    # _flatten_layers also reaches BN layers nested inside custom layers (conv-BN-ReLU blocks),
    # which `model.layers` does not list.
    for layer in model._flatten_layers(include_self=True, recursive=True):  # noqa: SLF001
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
            count += 1
    return count
