"""Expert trajectories for trajectory matching (MTT, IADD), trained in parallel on Ray Train."""

from raydd.io.experts import load_expert
from raydd.trajectories.experts import ExpertsConfig, train_expert, train_experts

__all__ = ["ExpertsConfig", "load_expert", "train_expert", "train_experts"]
