"""What a training run shows in TensorBoard besides its scalars (``tensorboard --logdir runs/``).

- Text ``config`` and the HParams tab: the resolved configuration, once at the start of a run.
- At every evaluation, the random-initialisation one at step 0 included: the ``eval/*`` scalars,
  ``eval/ranked_lists`` (`NUM_QUERIES` valid queries and their top `TOPK`, green = same identity)
  and, for models with hard attention (HA-CNN's ``attention/theta_*``),
  ``eval/hard_attention``: the regions drawn as boxes on the same queries, next to the soft maps.
Pictures come from `tfreid.visualize` (the same drawings as ``python -m tfreid.visualize``).
"""

from __future__ import annotations

import numpy as np
import yaml

from tfreid.visualize import draw
from tfreid.visualize.attention import THETA_PREFIX, render_attention_rows
from tfreid.visualize.ranks import render_ranked_lists

__all__ = ["NUM_QUERIES", "TOPK", "config_text", "eval_images", "hparams", "log_start"]

NUM_QUERIES = 4
TOPK = 5


def config_text(cfg) -> str:
    """The resolved config as YAML, indented as a Markdown code block (TensorBoard's Text tab)."""
    dumped = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    return "\n".join("    " + line for line in dumped.splitlines())


def hparams(cfg) -> dict:
    """The config's leaves as ``{"optim.lr": 0.0005, ...}``: numbers, booleans and strings as they
    are, anything else (lists, None, loss terms) as its text."""
    flat = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        elif isinstance(value, (bool, int, float, str)):
            flat[prefix] = value
        else:
            flat[prefix] = str(value)

    walk("", cfg.to_dict())
    return flat


def eval_images(model, metrics: dict) -> dict[str, np.ndarray]:
    """TensorBoard pictures for one evaluation; pops ``metrics["ranked_lists"]``.

    Returns:
        ``{"eval/ranked_lists": uint8 [H, W, 3]}`` plus ``"eval/hard_attention"`` for a model with
        ``attention/theta_*`` outputs; ``{}`` without ranked lists (no valid query).
    """
    lists = metrics.pop("ranked_lists", None)
    if lists is None:
        return {}
    images = {"eval/ranked_lists": np.asarray(draw.stack_rows(render_ranked_lists(lists)))}
    outputs = model.output if isinstance(model.output, dict) else {}
    if any(key.startswith(THETA_PREFIX) for key in outputs):
        size = tuple(int(v) for v in model.input.shape[1:3])
        pixels = draw.load_images([q.path for q in lists.query], size)
        titles = [f"query {i}" for i in lists.query_index]
        images["eval/hard_attention"] = np.asarray(draw.stack_rows(
            render_attention_rows(model, pixels, titles)))
    return images


def log_start(logger, cfg, init_metrics: dict | None, images: dict | None) -> None:
    """Step 0 of a new run: the config (text + hparams) and the random-init evaluation."""
    logger.text(0, "config", config_text(cfg))
    logger.hparams(hparams(cfg))
    if init_metrics:
        logger.log(0, {f"eval/{k}": float(v) for k, v in init_metrics.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)})
    if images:
        logger.images(0, images)
