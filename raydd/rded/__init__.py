"""RDED: crops → realism scores → per-class selection → stitching → soft labels, on Ray Data."""

from raydd.rded.config import RdedConfig
from raydd.rded.pipeline import distill

__all__ = ["RdedConfig", "distill"]
