"""relight: relight the people in a video to a 360-degree HDR environment map, on a CPU.

Public API: :class:`RelightSettings`, :class:`Relighter` (frames as numpy arrays) and
:func:`relight_file` (a whole video or image file), mirroring ``relight run``.
"""
import os as _os

__version__ = "0.1.0"

# OpenBLAS' worker threads busy-wait between the small matrix products done here (SH fits of a
# few thousand samples): on two cores they take CPU from the decode/encode threads and the
# compiled kernels for nothing. One thread, unless the user asked otherwise (before numpy loads;
# relight_file also holds it to one thread at run time: threads.blas_one_thread).
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__all__ = ["RelightSettings", "Relighter", "relight_file", "__version__"]


def __getattr__(name):  # lazy, so that `import relight` stays cheap
    if name == "RelightSettings":
        from .settings import RelightSettings

        return RelightSettings
    if name in ("Relighter", "relight_file"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'relight' has no attribute {name!r}")
