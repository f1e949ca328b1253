"""Grid puzzles with recurring states (Sokoban, FrozenLake): the family that makes step-level
credit assignment (GiGPO) matter and that a small model can learn on a CPU."""
