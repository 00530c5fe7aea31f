"""Evaluation: students trained on distilled sets under the RDED or MTT protocol, beside random baselines."""

from raydd.evaluate.config import EvalConfig
from raydd.evaluate.runner import evaluate

__all__ = ["EvalConfig", "evaluate"]
