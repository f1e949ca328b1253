"""turngym.trainers: advantage estimators, policy losses and batch sampling for per-turn RL."""

from turngym.trainers.estimators import ESTIMATORS, EstimatorError, estimate, register_estimator

__all__ = ["ESTIMATORS", "EstimatorError", "estimate", "register_estimator"]
