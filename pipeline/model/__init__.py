from .depth_anything import DepthAnything, build_model

__all__ = ["DepthAnything", "build_model"]
