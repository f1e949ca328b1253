"""turngym.agents — policies, the agent loop and the batched multi-turn rollout engine."""

from turngym.agents.policy import Completion, Policy, SamplingParams
from turngym.agents.trajectory import Trajectory, Turn, read_jsonl, write_jsonl

__all__ = ["Completion", "Policy", "SamplingParams", "Trajectory", "Turn", "read_jsonl", "write_jsonl"]
