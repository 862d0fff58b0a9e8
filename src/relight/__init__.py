"""relight: relight the people in a video to a 360-degree HDR environment map, on a CPU.

Public API: :class:`RelightSettings`, :class:`Relighter` (frames as numpy arrays) and
:func:`relight_file` (a whole video or image file), mirroring ``relight run``.
"""
__version__ = "0.1.0"

__all__ = ["RelightSettings", "Relighter", "relight_file", "__version__"]


def __getattr__(name):  # lazy, so that `import relight` stays cheap
    if name == "RelightSettings":
        from .settings import RelightSettings

        return RelightSettings
    if name in ("Relighter", "relight_file"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'relight' has no attribute {name!r}")
