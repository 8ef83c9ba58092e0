"""Pictures of a trained run: ranked lists, attention maps, training curves.

    python -m tfreid.visualize ranks --run RUN [--num-queries 20] [--topk 10]
    python -m tfreid.visualize attention --run RUN [--images IMG_OR_DIR ...]
    python -m tfreid.visualize curves --run RUN

Submodules (imported on use, so ``import tfreid.visualize`` stays light): `ranks`, `attention`,
`curves`, `draw` (shared Pillow helpers).
"""
