"""Training curves of a run: loss terms, learning rate, rank-1 and mAP over the training steps.

Reads what every run writes (`tfreid.runs`): ``logs/scalars.jsonl`` (``loss/<term>``,
``learning_rate``, ``eval/<metric>``), ``metrics_init.json`` (the random-initialisation
evaluation, plotted at step 0) and ``metrics.json`` (the final evaluation).
A resumed run appends to ``scalars.jsonl`` from its checkpoint's step; for a step logged twice the
later value (the run that carried on) is kept.

Example:
    >>> plot_curves("runs/hacnn-trained")  # doctest: +SKIP
    PosixPath('runs/hacnn-trained/visualize/curves.png')
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from tfreid.runs import SCALARS_FILE, RunDir

FIGSIZE = (13.5, 3.6)  # inches; at DPI this is the PNG size in pixels (1350 x 360)
DPI = 100
RETRIEVAL = (("rank1", "rank-1"), ("mAP", "mAP"))


@dataclasses.dataclass
class Curves:
    """Series ``{name: (steps, values)}`` (float arrays, steps ascending) of one run.

    Attributes:
        losses: one series per ``loss/<name>`` tag (``total`` included).
        learning_rate: ``{"learning_rate": ...}`` or empty.
        retrieval: ``rank1`` and ``mAP`` as fractions in [0, 1] (init at step 0, every
            evaluation during training, the final one).
        steps_per_epoch: from ``metrics.json`` (None when unknown).
    """

    losses: dict
    learning_rate: dict
    retrieval: dict
    steps_per_epoch: float | None


def _series(points) -> tuple[np.ndarray, np.ndarray]:
    last = {}
    for step, value in points:  # file order: a resumed run's later value wins
        last[int(step)] = float(value)
    steps = np.array(sorted(last), np.float64)
    return steps, np.array([last[int(s)] for s in steps], np.float64)


def load_curves(run_dir) -> Curves:
    """Reads a run's curves (see the module docstring).

    Raises:
        FileNotFoundError: ``run_dir/logs/scalars.jsonl`` is missing.
        ValueError: the run logged no loss at all.
    """
    run = RunDir(run_dir)
    path = run.logs / SCALARS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run.path} a tfreid run directory "
                                "(written by python -m tfreid.train)?")
    scalars = run.read_scalars()
    losses = {tag[len("loss/"):]: _series(v) for tag, v in scalars.items() if tag.startswith("loss/")}
    if not losses:
        raise ValueError(f"{path} holds no loss/* scalars (tags: {sorted(scalars)})")
    lr = {"learning_rate": _series(scalars["learning_rate"])} if "learning_rate" in scalars else {}
    init, final = run.read_metrics(init=True), run.read_metrics()
    retrieval = {}
    for key, _ in RETRIEVAL:
        logged_points = scalars.get(f"eval/{key}", [])
        # runs since the TensorBoard step-0 logging carry the random-init point themselves
        points = [(0, init[key])] if key in init and not any(s == 0 for s, _ in logged_points) else []
        points += logged_points
        if key in final and "steps" in final:
            logged = {int(s) for s, _ in scalars.get(f"eval/{key}", [])}
            if int(final["steps"]) not in logged:
                points.append((int(final["steps"]), final[key]))
        if points:
            retrieval[key] = _series(points)
    spe = None
    if final.get("steps") and final.get("epoch"):
        spe = float(final["steps"]) / float(final["epoch"])
    return Curves(losses, lr, retrieval, spe)


def make_figure(curves: Curves):
    """A matplotlib ``Figure`` (Agg, not shown) with three panels: losses, learning rate,
    rank-1/mAP in percent. Each line carries its series name as its label."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax_loss, ax_lr, ax_ret = fig.subplots(1, 3)
    for name, (steps, values) in curves.losses.items():
        total = name == "total"
        ax_loss.plot(steps, values, label=name, linewidth=2.0 if total else 1.5,
                     color="black" if total else None)
    ax_loss.set(title="loss", xlabel="step")
    ax_loss.legend(fontsize=8)
    for name, (steps, values) in curves.learning_rate.items():
        ax_lr.plot(steps, values, label=name, color="tab:purple", linewidth=1.5)
    ax_lr.set(title="learning rate", xlabel="step")
    # Explicit exponents per tick: a shared "1e-3" offset label would collide with the epoch axis.
    ax_lr.yaxis.set_major_formatter(FormatStrFormatter("%.1e"))
    colours = {"rank1": "tab:blue", "mAP": "tab:orange"}
    for key, label in RETRIEVAL:
        if key in curves.retrieval:
            steps, values = curves.retrieval[key]
            ax_ret.plot(steps, 100.0 * values, marker="o", markersize=4, label=label,
                        color=colours[key], linewidth=1.5)
    ax_ret.set(title="retrieval (step 0 = random init)", xlabel="step", ylabel="%")
    ax_ret.set_ylim(0, 100)
    if curves.retrieval:
        ax_ret.legend(fontsize=8)
    for ax, has in ((ax_lr, curves.learning_rate), (ax_ret, curves.retrieval)):
        if not has:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    if curves.steps_per_epoch:
        spe = curves.steps_per_epoch
        for ax in (ax_loss, ax_lr, ax_ret):
            top = ax.secondary_xaxis("top", functions=(lambda s: s / spe, lambda e: e * spe))
            top.tick_params(labelsize=7)
            top.set_xlabel("epoch", fontsize=7)
    for ax in (ax_loss, ax_lr, ax_ret):
        ax.grid(alpha=0.3)
    return fig


def plot_curves(run_dir, output=None) -> pathlib.Path:
    """Writes the curves of ``run_dir`` to ``output`` (default ``RUN/visualize/curves.png``),
    a PNG of exactly ``FIGSIZE * DPI`` pixels; returns its path."""
    output = pathlib.Path(output) if output else pathlib.Path(run_dir) / "visualize" / "curves.png"
    if output.suffix.lower() != ".png":
        raise ValueError(f"output must be a .png file, got {str(output)!r}")
    fig = make_figure(load_curves(run_dir))
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=DPI)
    return output
