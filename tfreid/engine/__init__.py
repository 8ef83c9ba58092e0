"""Training engine: strategy, trainer, checkpoints, evaluation, one-run orchestration.

Import the submodules directly (`tfreid.engine.trainer`, `tfreid.engine.session`, ...); this
package keeps its import light so `configure_cpu_replicas` can run before TF initialises devices.
"""
