"""glibc malloc thresholds for training: keep tensor memory in the heap between steps.

TensorFlow 2.21 on Python 3.11 calls ``mallopt(M_MMAP_THRESHOLD, 128 KiB)`` the first time a
``GeneratorDataset`` kernel is built (``ApplyPython311MemoryPatch``), which every
``strategy.experimental_distribute_dataset`` iterator does. A fixed threshold also switches off
glibc's adaptive one, so from then on every tensor above 128 KiB is a fresh ``mmap`` that is
unmapped when freed: each training step faults its activations and gradients in again, page by
page. :func:`keep_tensor_memory` sets the values glibc's adaptive scheme itself settles on for
large blocks (mmap threshold 32 MiB, its 64-bit maximum; trim threshold twice that), so freed
tensor memory is reused by the next step. On other C libraries and platforms it does nothing.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["keep_tensor_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # what glibc's adaptive scheme pairs with it


def keep_tensor_memory() -> bool:
    """Sets glibc's mmap/trim thresholds so freed tensors stay in the heap for reuse.

    Call it after TensorFlow has built the training iterator (and again after anything that
    may build a new one); calling it repeatedly is cheap and harmless.

    Returns:
        True if both thresholds were set (glibc on Linux), False otherwise.

    Example:
        >>> iterator = iter(strategy.experimental_distribute_dataset(dataset))
        >>> keep_tensor_memory()
        True
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
