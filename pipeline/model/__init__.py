from .depth_anything import DepthAnything, build_model
from .inference import optimize_for_inference

__all__ = ["DepthAnything", "build_model", "optimize_for_inference"]
