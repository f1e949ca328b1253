"""Theorem proving: Coq and Lean 4, whole-proof and tactic mode (see ``env.py``)."""
