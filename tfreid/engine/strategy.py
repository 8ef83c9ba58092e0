"""Distribution strategies for training: GPUs, or N logical CPU replicas on a CPU-only host.

On a machine without GPUs, ``configure_cpu_replicas(n)`` splits the CPU into ``n`` logical
devices so the multi-replica code path (per-replica batches, cross-replica gradient and
BatchNorm reductions) runs — and is tested — everywhere.

Example:
    >>> from tfreid.engine.strategy import configure_cpu_replicas, create_strategy
    >>> configure_cpu_replicas(2)          # before anything touches TF devices
    >>> strategy = create_strategy(2)      # MirroredStrategy over /cpu:0 and /cpu:1
    >>> strategy.num_replicas_in_sync
    2

Several hosts (or processes): every worker runs the same program with ``TF_CONFIG`` set (or with
``tf_config_from_hosts``); ``create_strategy(tf_config=...)`` then returns a
``MultiWorkerMirroredStrategy`` and :func:`worker_info` tells the chief (who writes checkpoints,
summaries and exports) from the other workers.
"""

from __future__ import annotations

import dataclasses
import json
import os

import keras
import tensorflow as tf

from tfreid.checks import check_int, check_worker_hosts

__all__ = ["configure_cpu_replicas", "create_strategy", "describe_devices", "enable_sync_batchnorm",
           "tf_config_from_hosts", "tf_config_from_env", "resolve_tf_config", "WorkerInfo",
           "worker_info", "task_from_tf_config"]


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
    check_int("n", n)
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


def create_strategy(replicas: int | None = None,
                    tf_config: dict | None = None) -> tf.distribute.Strategy:
    """Returns the distribution strategy: one host, or several workers.

    * ``tf_config`` describes a cluster (see :func:`resolve_tf_config`):
      ``MultiWorkerMirroredStrategy`` over all workers, each contributing its local GPUs (or its
      CPU), with RING collectives (NCCL does not exist on CPU; RING works on both). It must be
      created before any other TensorFlow op runs in the process.

    * GPUs visible: ``MirroredStrategy`` over all GPUs, or over the first ``replicas`` of them.
    * CPU only, ``replicas`` in ``(None, 1)``: ``OneDeviceStrategy("/cpu:0")`` — it has a real
      replica context, so the training code path is the same as with N replicas.
    * CPU only, ``replicas = N > 1``: ``MirroredStrategy`` over N logical CPU devices created by
      :func:`configure_cpu_replicas` (called here if TF is not initialised yet), with
      ``ReductionToOneDevice`` (NCCL does not exist on CPU).

    Args:
        replicas: number of replicas, or ``None`` for "all GPUs / one CPU". Must be None or 1
            with ``tf_config`` (a worker uses all its GPUs; restrict with CUDA_VISIBLE_DEVICES).
        tf_config: a ``TF_CONFIG``-style dict ``{"cluster": {"worker": [...]}, "task": {...}}``,
            or None for single-host training.

    Returns:
        A ``tf.distribute.Strategy``.

    Raises:
        ValueError: ``replicas`` is not a positive integer/None, asks for more GPUs than exist,
            or is > 1 together with ``tf_config``; ``tf_config`` is malformed.
        RuntimeError: CPU-only, ``replicas > 1`` and TF already initialised with fewer devices.

    Example:
        >>> strategy = create_strategy()
        >>> with strategy.scope():
        ...     model = build_model("hacnn", num_classes=751)
    """
    check_int("replicas", replicas, allow_none=True)
    if tf_config is not None:
        if replicas not in (None, 1):
            raise ValueError(f"`replicas`={replicas} cannot be combined with multi-worker "
                             "training (`tf_config`): every worker uses all its local GPUs (or "
                             "its CPU); select GPUs with CUDA_VISIBLE_DEVICES.")
        task_type, task_id = task_from_tf_config(tf_config)
        cluster = tf.train.ClusterSpec(tf_config["cluster"])
        # An explicit resolver instead of os.environ["TF_CONFIG"]: no hidden global state, and
        # --worker-hosts works without touching the environment.
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            cluster, task_type=task_type, task_id=task_id, rpc_layer="grpc")
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING)
        return tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=resolver, communication_options=options)
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


def describe_devices(strategy: tf.distribute.Strategy) -> str:
    """One line naming the devices `strategy` trains on, and the GPUs TensorFlow sees, e.g.
    ``training on 1 replica: /job:localhost/replica:0/task:0/device:CPU:0 (no GPU visible)``."""
    devices = list(strategy.extended.worker_devices)
    gpus = tf.config.list_physical_devices("GPU")
    names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
    seen = f"GPUs visible: {', '.join(names)}" if gpus else "no GPU visible"
    plural = "s" if len(devices) != 1 else ""
    return f"training on {len(devices)} replica{plural}: {', '.join(devices)} ({seen})"


def enable_sync_batchnorm(model: keras.Model) -> int:
    """Switches every Keras ``BatchNormalization`` layer of ``model`` to synchronized statistics.

    With synchronized BN the batch mean/variance are all-reduced over the replicas, so a global
    batch split over N replicas normalises exactly like the same batch on one replica.
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


# ---------------------------------------------------------------------------- multi-worker
def tf_config_from_hosts(worker_hosts, task_index: int) -> dict:
    """Builds the ``TF_CONFIG`` dict for ``--worker-hosts h1:p1,h2:p2 --task-index N``.

    Args:
        worker_hosts: ``"host:port,host:port"`` or a list of ``"host:port"`` strings, the same
            list (same order) on every worker; worker 0 is the chief.
        task_index: this process' position in ``worker_hosts``.

    Returns:
        ``{"cluster": {"worker": [...]}, "task": {"type": "worker", "index": task_index}}``.

    Raises:
        ValueError: empty/malformed host list, duplicates, or ``task_index`` out of range.

    Example:
        >>> tf_config_from_hosts("10.0.0.1:2222,10.0.0.2:2222", 1)["task"]
        {'type': 'worker', 'index': 1}
    """
    if worker_hosts is None or task_index is None:
        raise ValueError("`worker_hosts` and `task_index` are both required, received "
                         f"worker_hosts={worker_hosts!r}, task_index={task_index!r}.")
    hosts = check_worker_hosts(worker_hosts, task_index)
    return {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": task_index}}


def tf_config_from_env() -> dict | None:
    """The parsed ``TF_CONFIG`` environment variable, or None when it is unset/empty.

    Raises:
        ValueError: ``TF_CONFIG`` is not valid JSON / not a cluster description.
    """
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON ({err}); received {raw!r}.") from None
    task_from_tf_config(cfg)  # validates
    return cfg


def resolve_tf_config(worker_hosts=None, task_index: int | None = None) -> dict | None:
    """The cluster to train on: from ``worker_hosts``/``task_index``, else ``TF_CONFIG``.

    A single-worker cluster is returned as None (plain single-host training).

    Raises:
        ValueError: both ``worker_hosts`` and ``TF_CONFIG`` are given, or only one of
            ``worker_hosts``/``task_index``, or either is malformed.
    """
    check_worker_hosts(worker_hosts, task_index)
    env = tf_config_from_env()
    if worker_hosts is not None:
        if env is not None:
            raise ValueError("both TF_CONFIG and --worker-hosts/--task-index are set; use one "
                             f"(TF_CONFIG={os.environ['TF_CONFIG']!r}).")
        cfg = tf_config_from_hosts(worker_hosts, task_index)
    else:
        cfg = env
    if cfg is None or sum(len(v) for v in cfg["cluster"].values()) < 2:
        return None
    return cfg


def task_from_tf_config(tf_config: dict) -> tuple[str, int]:
    """Validates a TF_CONFIG dict; returns its ``(task_type, task_index)``."""
    ok = (isinstance(tf_config, dict) and isinstance(tf_config.get("cluster"), dict)
          and isinstance(tf_config.get("task"), dict))
    task = tf_config.get("task", {}) if ok else {}
    task_type, index = task.get("type"), task.get("index")
    if ok:
        members = tf_config["cluster"].get(task_type)
        ok = (isinstance(members, list) and isinstance(index, int)
              and not isinstance(index, bool) and 0 <= index < len(members))
    if not ok:
        raise ValueError('TF_CONFIG must look like {"cluster": {"worker": ["host:port", ...]}, '
                         '"task": {"type": "worker", "index": N}} with N a valid position; '
                         f"received {tf_config!r}.")
    return str(task_type), int(index)


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """Where this process sits in a (possibly single-worker) cluster.

    Attributes:
        task_type: ``"worker"`` / ``"chief"`` (``"worker"`` for single-host strategies).
        task_id: index within ``task_type``.
        num_workers: processes that train together (1 for single-host strategies).
        is_chief: True for the one process that writes checkpoints, summaries and exports.
    """

    task_type: str
    task_id: int
    num_workers: int
    is_chief: bool


def worker_info(strategy: tf.distribute.Strategy | None = None,
                tf_config: dict | None = None) -> WorkerInfo:
    """Chief or not: from a strategy's cluster resolver, or from a TF_CONFIG dict (no TF ops).

    The chief is task ``chief`` if the cluster has one, else ``worker`` 0 (TF's convention).

    Example:
        >>> worker_info(create_strategy()).is_chief
        True
    """
    if strategy is not None:
        resolver = getattr(strategy, "cluster_resolver", None)
        if resolver is None or not resolver.cluster_spec().as_dict():
            return WorkerInfo("worker", 0, 1, True)
        cluster = resolver.cluster_spec().as_dict()
        task_type, task_id = resolver.task_type, int(resolver.task_id)
    elif tf_config is not None:
        task_type, task_id = task_from_tf_config(tf_config)
        cluster = tf_config["cluster"]
    else:
        return WorkerInfo("worker", 0, 1, True)
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    chief = task_type == "chief" or (task_type == "worker" and task_id == 0
                                     and "chief" not in cluster)
    return WorkerInfo(str(task_type), task_id, workers, chief)
