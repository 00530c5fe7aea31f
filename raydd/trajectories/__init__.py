"""Expert trajectories for trajectory matching (MTT, IADD), trained in parallel on Ray Train."""

from raydd.trajectories.experts import ExpertsConfig, load_expert, train_expert, train_experts

__all__ = ["ExpertsConfig", "load_expert", "train_expert", "train_experts"]
