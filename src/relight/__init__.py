"""relight: relight the people in a video to a 360-degree HDR environment map, on a CPU."""
__version__ = "0.1.0"
