"""Trajectory matching: MTT, and IADD with learned importance weights, on Ray Train."""

from raydd.matching.config import MatchConfig
from raydd.matching.match import match

__all__ = ["MatchConfig", "match"]
