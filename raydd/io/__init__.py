"""The distilled-set format: reading it, and writing it safely."""

from raydd.io.distilled import DistilledSet, OutputExistsError, RunFolder

__all__ = ["DistilledSet", "OutputExistsError", "RunFolder"]
