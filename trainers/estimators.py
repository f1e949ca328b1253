"""Advantage estimators: pure, vectorised functions from per-turn rewards to per-row advantages.

This module is the one place to read how turngym credits turns. The formulas, defaults and
worked examples are those of ``docs/algorithms.md``; each estimator's docstring cites the
equation it implements.

The contract
------------
``estimate(name, rewards, group_ids, traj_ids, steps, anchors=None, strata=None, **options)``
returns one float64 advantage per **row**. A row is one turn (one policy call) of one
trajectory; rows may come in any order.

- ``rewards[i]``: the environment reward of row i's turn.
- ``group_ids[i]``: the GRPO group (rollouts of the same task from the same initial state).
- ``traj_ids[i]``: the trajectory. Trajectory keys are scoped by group: the pair
  ``(group_id, traj_id)`` names a trajectory, so ids ``0..G-1`` may repeat across groups.
- ``steps[i]``: the turn index inside its trajectory (only the order matters; unique per
  trajectory).
- ``anchors[i]``: the raw environment state before the action (``info["anchor"]``), used by
  GiGPO; any value :func:`turngym.envs.core.canonical_anchor` accepts.
- ``strata[i]``: the structural key of the trajectory so far (``info["stratum"]``), used by
  Stratified GRPO; a trajectory's stratum is the one reported at its last turn.

How multi-turn rows are treated
-------------------------------
The outcome estimators (``grpo``, ``dr_grpo``, ``rloo``, ``reinforce_pp``, ``stratified``)
are defined on one scalar per trajectory: the trajectory return ``R = sum_t r_t``. They compute
their statistics over **trajectories** (one value per trajectory, whatever its number of turns)
and broadcast the trajectory's advantage to each of its rows. ``flow_grpo`` (by default, as in
the AgentFlow code) and ``gigpo``'s episode level (``episode_stats="step"``, as in the
verl-agent code) instead compute the statistics over **turn rows**, so long trajectories weigh
more; both have a flag for the paper's per-trajectory statistics. ``reinforce_pp`` whitens over
valid tokens, so it takes ``token_counts`` (response tokens per row, default 1; the trainer
passes the table's response lengths).

Per-turn columns an estimator asks for
-------------------------------------
``estimate_columns(name, columns, **options)`` is the trainer's call: ``columns`` maps the names
above (``rewards``, ``group_ids``, ``traj_ids``, ``steps``, ``anchors``, ``strata``) and those of
:data:`EXTRA_COLUMNS` to one entry per row. Every estimator gets the first six through its
:class:`RowBatch`; an extra column reaches an estimator whose signature names it as a keyword
parameter (``gigpo(batch, *, action_valid=None, ...)`` gets ``action_valid``), so a new
estimator asks for a column by naming it. Options never name a column.

Conventions: fp64 statistics, unbiased std (ddof=1), ``EPS = 1e-6`` added to the std.

Adding an estimator
-------------------
Write ``def my_estimator(batch: RowBatch, *, option=default) -> np.ndarray`` returning one
advantage per row, add one line ``register_estimator("my_name", my_estimator)`` (or decorate
it with ``@register_estimator("my_name")``), and add its worked example to
``tests/trainers/test_estimators.py``.

Implementation notes: group-bys are ``np.unique(..., return_inverse=True)`` codes plus
``np.bincount``; step returns use a blocked reverse scan (see :func:`discounted_returns`); no
Python loop runs per row except GiGPO's optional text-similarity clustering. Hashable anchors
and strata of any type (tuples included: what environments report and Turns keep) are coded
by one C-level dict pass, one hash per row (none when they already are a numeric or string
numpy array); only unhashable ones (lists, dicts, arrays) are canonicalised row by row. The
trainer does that pass once per step, where the turn table is built (:func:`anchor_codes`), and
hands GiGPO the integers as its ``anchor_codes`` column: hashing a nested tuple of strings costs
several times GiGPO's whole integer path, and codes give the same step groups.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np

__all__ = [
    "EPS",
    "ESTIMATORS",
    "EXTRA_COLUMNS",
    "EstimatorError",
    "RowBatch",
    "anchor_codes",
    "discounted_returns",
    "estimate",
    "estimate_columns",
    "register_estimator",
    "segment_mean_std",
]

EPS = 1e-6

Estimator = Callable[..., np.ndarray]

#: name -> estimator function ``fn(batch: RowBatch, **options) -> np.ndarray``.
ESTIMATORS: dict[str, Estimator] = {}


class EstimatorError(ValueError):
    """An estimator was asked for something it cannot do (unknown name, bad option, bad input)."""


def register_estimator(name: str, fn: Estimator | None = None):
    """Register ``fn`` under ``name``; usable as ``register_estimator(name, fn)`` or a decorator."""

    def add(f: Estimator) -> Estimator:
        if name in ESTIMATORS and ESTIMATORS[name] is not f:
            raise EstimatorError(f"an estimator named {name!r} is already registered")
        ESTIMATORS[name] = f
        return f

    return add(fn) if fn is not None else add


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


_PLAIN_NUMBERS = (int, float, bool, np.number, np.bool_)


def _codes(keys: Any) -> tuple[np.ndarray, int]:
    """Dense integer codes ``0..k-1`` for the values of ``keys`` (any order), and ``k``.

    1-D numeric or string numpy arrays, and lists of plain numbers, are coded by value
    (integers through an O(n) lookup table, others by ``np.unique``). Anything else — lists of
    strings, tuples, dicts, arrays, mixed types, 2-D arrays (one anchor per row) — is coded by
    :func:`turngym.envs.core.canonical_anchor` key, so ``1`` and ``"1"`` stay distinct and a
    list of pairs is not mistaken for a 2-D array.
    """
    if isinstance(keys, np.ndarray):
        arr = keys
    elif isinstance(keys, (list, tuple)) and keys and not isinstance(keys[0], _PLAIN_NUMBERS):
        return _hashable_codes(keys)  # np.asarray would build a slow (and wrong) 2-D array
    else:
        try:
            arr = np.asarray(keys)
        except ValueError:  # ragged nested lists
            return _hashable_codes(list(keys))
        if arr.dtype.kind not in "iufb":  # e.g. a list mixing 1 and "1" became strings
            return _hashable_codes(list(keys))
    if arr.ndim != 1 or arr.dtype.kind not in "iufbUS":
        return _hashable_codes(list(keys))
    if arr.dtype.kind in "iub" and len(arr):
        return _dense_int_codes(arr.astype(np.int64, copy=False))
    uniq, inverse = np.unique(arr, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64, copy=False), len(uniq)


def _dense_int_codes(arr: np.ndarray) -> tuple[np.ndarray, int]:
    """Codes of integers in sorted-value order, like ``np.unique``; O(n) through a lookup table
    when the value range is at most a few times the length, a sort otherwise."""
    lo, hi = int(arr.min()), int(arr.max())
    if hi - lo > 4 * len(arr) + 4096:
        uniq, inverse = np.unique(arr, return_inverse=True)
        return inverse.reshape(-1).astype(np.int64, copy=False), len(uniq)
    present = np.zeros(hi - lo + 1, dtype=bool)
    present[arr - lo] = True
    table = np.cumsum(present) - 1
    return table[arr - lo], int(table[-1]) + 1


def _stable_argsort(keys: np.ndarray) -> np.ndarray:
    """Stable argsort of non-negative int64 keys: LSD radix passes over 16-bit digits (numpy's
    stable sort is a radix sort for 16-bit types, O(n)); a comparison sort for keys >= 2^48."""
    top = int(keys.max()) if len(keys) else 0
    if top >= 1 << 48:
        return np.argsort(keys, kind="stable")
    order = np.argsort((keys & 0xFFFF).astype(np.uint16), kind="stable")
    shift = 16
    while top >> shift:
        digit = ((keys[order] >> shift) & 0xFFFF).astype(np.uint16)
        order = order[np.argsort(digit, kind="stable")]
        shift += 16
    return order


class _CodeTable(dict):
    """value -> dense code; an unseen value gets the next code on its first lookup."""

    def __missing__(self, key: Any) -> int:
        code = self[key] = len(self)
        return code


def _hashable_codes(values: Sequence[Any]) -> tuple[np.ndarray, int]:
    """Codes for arbitrary anchor-like values, by their canonical key.

    Hashable values (ints, strings, tuples: what ``info["anchor"]`` holds and a Turn keeps)
    take one C-level pass, one hash per row (``map(table.__getitem__, values)``; Python runs
    only on a value's first occurrence). They need no canonicalisation: two hashable values are
    equal as dict keys exactly when their :func:`turngym.envs.core.canonical_anchor` keys are
    equal (numpy scalars hash and compare like the Python numbers ``canonical_anchor`` makes of
    them). Unhashable values (lists, dicts, arrays) are canonicalised row by row: the slow path.
    """
    n = len(values)
    table = _CodeTable()
    try:
        return np.fromiter(map(table.__getitem__, values), np.int64, n), len(table)
    except TypeError:
        # Imported here so that `import turngym.trainers` does not pull in gymnasium.
        from turngym.envs.core import canonical_anchor

        table = _CodeTable()
        codes = np.fromiter(map(table.__getitem__, map(canonical_anchor, values)), np.int64, n)
        return codes, len(table)


def anchor_codes(anchors: Any) -> np.ndarray:
    """One int64 code per anchor (or stratum), equal exactly where the canonical keys of
    :func:`turngym.envs.core.canonical_anchor` are equal: what GiGPO's ``anchor_codes`` column
    takes. The turn table interns a step's anchors with it once, so that the estimator groups
    integers; the numbering is first-occurrence order, which no advantage depends on."""
    return _codes(anchors)[0]


def _pair_codes(a: np.ndarray, b: np.ndarray, nb: int) -> tuple[np.ndarray, int]:
    """Dense codes of the pairs ``(a[i], b[i])`` given dense codes ``a`` and ``b`` (every value
    ``0..nb-1`` of ``b`` present).

    When the pair keys span more than a lookup table covers and each ``b`` value occurs with one
    ``a`` only (trajectory ids unique across groups; interned anchors that name their question),
    the pairs are the ``b`` codes themselves: O(n), where ``np.unique`` would sort."""
    key = a * np.int64(nb) + b
    if len(key) and int(key.max()) > 4 * len(key) + 4096:
        owner = np.empty(nb, dtype=np.int64)
        owner[b] = a
        if np.array_equal(owner[b], a):
            return b, nb
    return _codes(key)


@dataclass(frozen=True, eq=False)
class RowBatch:
    """The validated inputs of an estimator; derived group-bys are computed once, on demand.

    ``group``/``traj``/``anchor`` are dense integer codes; ``traj`` codes are scoped by group.
    """

    rewards: np.ndarray
    group: np.ndarray
    n_groups: int
    traj: np.ndarray
    n_trajs: int
    steps: np.ndarray
    anchors: Sequence[Any] | np.ndarray | None = None
    strata: Sequence[Any] | np.ndarray | None = None

    @classmethod
    def build(
        cls,
        rewards: Any,
        group_ids: Any,
        traj_ids: Any,
        steps: Any,
        anchors: Any = None,
        strata: Any = None,
    ) -> RowBatch:
        rewards = np.asarray(rewards, dtype=np.float64).reshape(-1)
        n = len(rewards)
        group, n_groups = _codes(group_ids)
        raw_traj, n_raw = _codes(traj_ids)
        steps = np.asarray(steps).reshape(-1)
        for name, arr in (("group_ids", group), ("traj_ids", raw_traj), ("steps", steps)):
            if len(arr) != n:
                raise EstimatorError(f"{name} has {len(arr)} entries but rewards has {n}")
        for name, seq in (("anchors", anchors), ("strata", strata)):
            if seq is not None and len(seq) != n:
                raise EstimatorError(f"{name} has {len(seq)} entries but rewards has {n}")
        if not np.all(np.isfinite(rewards)):
            raise EstimatorError("rewards must be finite numbers")
        traj, n_trajs = _pair_codes(group, raw_traj, n_raw)
        return cls(rewards, group, n_groups, traj, n_trajs, steps, anchors, strata)

    def __len__(self) -> int:
        return len(self.rewards)

    @cached_property
    def traj_lengths(self) -> np.ndarray:
        """Number of turn rows of each trajectory code."""
        return np.bincount(self.traj, minlength=self.n_trajs)

    @cached_property
    def positions(self) -> np.ndarray:
        """Each row's turn position 0..L-1 inside its trajectory (the rank of its step).

        Validates that steps are unique within a trajectory. No sort when each trajectory's
        steps are consecutive integers (the usual case); a radix sort by (trajectory, step)
        otherwise.
        """
        steps = self.steps
        if steps.dtype.kind in "iu":
            steps = steps.astype(np.int64, copy=False)
            first = np.full(self.n_trajs, np.iinfo(np.int64).max)
            last = np.full(self.n_trajs, np.iinfo(np.int64).min)
            np.minimum.at(first, self.traj, steps)
            np.maximum.at(last, self.traj, steps)
            if np.array_equal(last - first + 1, self.traj_lengths):
                position = steps - first[self.traj]
                # Consecutive span and as many rows as steps: unique iff every slot is hit once.
                offset = np.cumsum(self.traj_lengths) - self.traj_lengths
                if np.bincount(offset[self.traj] + position, minlength=len(steps)).max() > 1:
                    raise EstimatorError("two rows of the same trajectory have the same step index")
                return position
        return self._sorted_positions()

    def _sorted_positions(self) -> np.ndarray:
        step_code, n_steps = _codes(self.steps)  # dense ranks keep the step order
        if self.n_trajs * n_steps < 1 << 62:
            key = self.traj * np.int64(n_steps) + step_code
            order = _stable_argsort(key)
            sorted_key = key[order]
            dup = sorted_key[1:] == sorted_key[:-1]
        else:
            order = np.lexsort((step_code, self.traj))
            t, s = self.traj[order], step_code[order]
            dup = (t[1:] == t[:-1]) & (s[1:] == s[:-1])
        if dup.any():
            raise EstimatorError("two rows of the same trajectory have the same step index")
        offset = np.cumsum(self.traj_lengths) - self.traj_lengths
        position = np.empty(len(order), dtype=np.int64)
        position[order] = np.arange(len(order)) - offset[self.traj[order]]
        return position

    @cached_property
    def traj_returns(self) -> np.ndarray:
        """R(tau) = sum_t r_t, one value per trajectory code."""
        return np.bincount(self.traj, self.rewards, minlength=self.n_trajs)

    @cached_property
    def traj_group(self) -> np.ndarray:
        """The group code of each trajectory code."""
        out = np.empty(self.n_trajs, dtype=np.int64)
        out[self.traj] = self.group
        return out

    @cached_property
    def last_row_of_traj(self) -> np.ndarray:
        """For each trajectory code, the row index of its last turn (highest step)."""
        is_last = self.positions == self.traj_lengths[self.traj] - 1
        out = np.empty(self.n_trajs, dtype=np.int64)
        out[self.traj[is_last]] = np.flatnonzero(is_last)
        return out


# --------------------------------------------------------------------------------------------
# Shared vectorised pieces
# --------------------------------------------------------------------------------------------


def segment_mean_std(
    values: np.ndarray, codes: np.ndarray, n_segments: int, *, with_std: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per-segment count, mean and unbiased std (NaN for segments of one) of ``values``."""
    count = np.bincount(codes, minlength=n_segments).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(codes, values, minlength=n_segments) / count
        if not with_std:
            return count, mean, None
        dev = values - mean[codes]  # two-pass: no cancellation for large means
        var = np.bincount(codes, dev * dev, minlength=n_segments) / (count - 1.0)
    return count, mean, np.sqrt(var)


def _group_normalize(
    values: np.ndarray,
    codes: np.ndarray,
    n_segments: int,
    *,
    use_std: bool,
    singleton: Literal["identity", "zero"],
) -> np.ndarray:
    """(x - mean_g) / (std_g + EPS), or x - mean_g without std, per segment g.

    ``singleton``: a segment of one member gets mean 0, std 1 (``"identity"``: A = x, the
    verl/verl-agent convention) or advantage 0 (``"zero"``).
    """
    count, mean, std = segment_mean_std(values, codes, n_segments, with_std=use_std)
    single = count == 1
    if singleton == "identity":
        mean = np.where(single, 0.0, mean)
    centred = values - mean[codes]
    if use_std:
        centred /= np.where(single, 1.0, std + EPS)[codes]
    if singleton == "zero" and single.any():
        centred[single[codes]] = 0.0
    return centred


# The block length K of the scan is capped so that gamma^(K-1) stays far from underflow (and
# gamma^-(K-1) from overflow) and the padded (K x blocks) matrix stays small.
_MAX_BLOCK = 64
_MAX_SCALE_LOG = math.log(1e100)


def discounted_returns(
    rewards: np.ndarray, segment: np.ndarray, position: np.ndarray, gamma: float
) -> np.ndarray:
    """R_t = sum_{k>=t} gamma^(k-t) r_k within each segment (docs/algorithms.md, section 3, step 3).

    Rows in any order; ``segment`` are integer codes and ``position`` the turn index 0..L-1
    inside the segment, each (segment, position) pair at most once (a missing position counts
    as reward 0). Fully vectorised and stable for segments of any length: positions are cut
    into blocks of K and scattered into a (K, blocks) matrix; inside a block the return is
    ``gamma^-q * revcumsum(gamma^q r)`` with the block-relative exponent q < K (so gamma^-q
    never overflows, and the reverse cumsum never subtracts); blocks are then chained by the
    same recurrence one level up, ``C_b = S_b + gamma^K C_{b+1}``, solved recursively with
    discount gamma^K (depth log_K(L)).
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    if not 0.0 <= gamma <= 1.0:
        raise EstimatorError(f"gamma must be in [0, 1], got {gamma}")
    n = len(rewards)
    if n == 0 or gamma == 0.0:
        return rewards.copy()
    segment = np.asarray(segment, dtype=np.int64)
    position = np.asarray(position, dtype=np.int64)
    seg_len = np.zeros(int(segment.max()) + 1, dtype=np.int64)
    np.maximum.at(seg_len, segment, position + 1)
    max_len = int(seg_len.max())
    if max_len == 1:
        return rewards.copy()
    k_gamma = _MAX_BLOCK if gamma == 1.0 else int(_MAX_SCALE_LOG / -math.log(gamma)) + 1
    block_len = max(2, min(_MAX_BLOCK, k_gamma, max_len))

    if max_len <= block_len:  # the common case: every segment is one block
        local, block, n_blocks = position, segment, len(seg_len)
    else:
        local = position % block_len
        blocks_per_seg = (seg_len + block_len - 1) // block_len
        block_offset = np.cumsum(blocks_per_seg) - blocks_per_seg
        block = block_offset[segment] + position // block_len
        n_blocks = int(blocks_per_seg.sum())
    scale = gamma ** np.arange(block_len, dtype=np.float64)  # gamma^q, q < K
    # (K, blocks) layout: the reverse cumsum runs down axis 0 over contiguous rows.
    cell = local * n_blocks + block
    mat = np.zeros(block_len * n_blocks)
    mat[cell] = rewards * scale[local]
    mat = mat.reshape(block_len, n_blocks)
    suffix = np.cumsum(mat[::-1], axis=0)[::-1]  # sum_{k>=q in block} gamma^k r_k
    within = suffix.reshape(-1)[cell] / scale[local]  # return from t to the end of its block
    if max_len <= block_len:
        return within

    # Chain the blocks: block ids are ordered by (segment, block index).
    block_segment = np.repeat(np.arange(len(seg_len)), blocks_per_seg)
    block_position = np.arange(n_blocks) - block_offset[block_segment]
    chained = discounted_returns(suffix[0], block_segment, block_position, gamma**block_len)
    # Return from the start of the next block of the same segment (0 if the segment ends).
    has_next = block_position + 1 < blocks_per_seg[block_segment]
    next_start = np.zeros(n_blocks)
    next_start[:-1] = np.where(has_next[:-1], chained[1:], 0.0)
    return within + gamma ** (block_len - local).astype(np.float64) * next_start[block]


# --------------------------------------------------------------------------------------------
# Outcome estimators (docs/algorithms.md section 2): statistics over trajectories
# --------------------------------------------------------------------------------------------


@register_estimator("grpo")
def grpo(batch: RowBatch, *, singleton_as_reward: bool = True) -> np.ndarray:
    """GRPO (DeepSeekMath 2402.03300, outcome supervision): A_i = (R_i - mean(R)) / (std(R) + EPS).

    Statistics over the trajectories of a group. ``singleton_as_reward``: a group of one
    trajectory uses mean 0, std 1 (A = R, the verl convention); off: A = 0.
    """
    adv = _group_normalize(
        batch.traj_returns,
        batch.traj_group,
        batch.n_groups,
        use_std=True,
        singleton="identity" if singleton_as_reward else "zero",
    )
    return adv[batch.traj]


@register_estimator("dr_grpo")
def dr_grpo(batch: RowBatch) -> np.ndarray:
    """Dr. GRPO (2503.20783): A_i = R_i - mean(R), no std division; singleton: A = R."""
    adv = _group_normalize(
        batch.traj_returns, batch.traj_group, batch.n_groups, use_std=False, singleton="identity"
    )
    return adv[batch.traj]


@register_estimator("rloo")
def rloo(batch: RowBatch) -> np.ndarray:
    """RLOO (2402.14740): A_i = R_i - 1/(G-1) sum_{j!=i} R_j; singleton: A = R."""
    returns, tg = batch.traj_returns, batch.traj_group
    count = np.bincount(tg, minlength=batch.n_groups).astype(np.float64)[tg]
    total = np.bincount(tg, returns, minlength=batch.n_groups)[tg]
    with np.errstate(invalid="ignore", divide="ignore"):
        leave_one_out = (total - returns) / (count - 1.0)
    adv = np.where(count > 1, returns - leave_one_out, returns)
    return adv[batch.traj]


@register_estimator("reinforce_pp")
def reinforce_pp(batch: RowBatch, *, token_counts: Any = None) -> np.ndarray:
    """REINFORCE++-baseline (2501.03262): A' = R_i - mean_group(R), then whitened over tokens.

    A' is broadcast to every valid response token; the whitening ``(A' - mu)/sqrt(var + 1e-8)``
    (unbiased var) runs over all valid tokens of the batch, so a row with ``token_counts[i]``
    tokens weighs that many times. A group of one trajectory uses mean 0.
    """
    a_prime = _group_normalize(
        batch.traj_returns, batch.traj_group, batch.n_groups, use_std=False, singleton="identity"
    )[batch.traj]
    weights = (
        np.ones(len(batch))
        if token_counts is None
        else np.asarray(token_counts, dtype=np.float64).reshape(-1)
    )
    if len(weights) != len(batch):
        raise EstimatorError(
            f"token_counts has {len(weights)} entries but there are {len(batch)} rows"
        )
    if np.any(weights < 0):
        raise EstimatorError("token_counts must be >= 0")
    n_tokens = weights.sum()
    if n_tokens < 2:
        raise EstimatorError("REINFORCE++ whitening needs at least 2 valid tokens in the batch")
    mu = np.dot(weights, a_prime) / n_tokens
    var = np.dot(weights, (a_prime - mu) ** 2) / (n_tokens - 1.0)
    return (a_prime - mu) / np.sqrt(var + 1e-8)


# --------------------------------------------------------------------------------------------
# Flow-GRPO (docs/algorithms.md section 4)
# --------------------------------------------------------------------------------------------


@register_estimator("flow_grpo")
def flow_grpo(
    batch: RowBatch, *, paper_statistics: bool = False, singleton_as_reward: bool = True
) -> np.ndarray:
    """Flow-GRPO (AgentFlow 2510.05592): the trajectory outcome broadcast to every turn.

    Default (authors' code): GRPO statistics over the group's **turn rows**, each row carrying
    its trajectory's return, so a trajectory weighs by its turn count. ``paper_statistics``:
    the paper's A_i^t = (R_i - mean_j R_j)/std_j R_j over the G trajectories (same as ``grpo``).
    """
    singleton = "identity" if singleton_as_reward else "zero"
    if paper_statistics:
        return grpo(batch, singleton_as_reward=singleton_as_reward)
    row_returns = batch.traj_returns[batch.traj]
    return _group_normalize(
        row_returns, batch.group, batch.n_groups, use_std=True, singleton=singleton
    )


# --------------------------------------------------------------------------------------------
# Stratified GRPO (docs/algorithms.md section 5)
# --------------------------------------------------------------------------------------------


@register_estimator("stratified")
def stratified(
    batch: RowBatch, *, alpha: float = 0.8, singleton_as_reward: bool = True
) -> np.ndarray:
    """Stratified GRPO (2510.06214, SAN): A = alpha*A_SAN + (1-alpha)*A_GN, per trajectory.

    A_GN = (R_i - mean_group)/(std_group + EPS) (GRPO, same singleton rule); A_SAN =
    (R_i - mean_stratum)/(std_stratum + EPS) within (group, stratum); strata of one trajectory,
    or whose rewards are all equal, get A_SAN = 0. A trajectory's stratum is the one of its
    last turn. Broadcast to all turns.
    """
    if batch.strata is None:
        raise EstimatorError("the stratified estimator needs strata (info['stratum'] per row)")
    if not 0.0 <= alpha <= 1.0:
        raise EstimatorError(f"alpha must be in [0, 1], got {alpha}")
    returns, tg = batch.traj_returns, batch.traj_group
    a_gn = _group_normalize(
        returns,
        tg,
        batch.n_groups,
        use_std=True,
        singleton="identity" if singleton_as_reward else "zero",
    )
    last = batch.last_row_of_traj
    strata = batch.strata
    if isinstance(strata, np.ndarray) and strata.ndim == 1 and strata.dtype.kind in "iufbUS":
        stratum, n_strata = _codes(strata[last])
    else:  # one lookup per trajectory, not per row
        stratum, n_strata = _hashable_codes([strata[i] for i in last])
    cell, n_cells = _pair_codes(tg, stratum, n_strata)
    # Equal rewards give (R - mean) = 0 exactly, hence A_SAN = 0 / (0 + EPS) = 0.
    a_san = _group_normalize(returns, cell, n_cells, use_std=True, singleton="zero")
    return (alpha * a_san + (1.0 - alpha) * a_gn)[batch.traj]


# --------------------------------------------------------------------------------------------
# GiGPO (docs/algorithms.md section 3)
# --------------------------------------------------------------------------------------------


def _similarity_anchor_codes(
    anchors: Sequence[Any], group: np.ndarray, threshold: float
) -> tuple[np.ndarray, int]:
    """Greedy text clustering inside each group: a row joins the first cluster whose first
    member has ``SequenceMatcher(None, a, b).ratio() >= threshold``, else founds a new one.

    O(unique anchors x clusters) ratio calls per group. Identical strings always land in the
    same cluster, so only the distinct anchors of a group (in first-occurrence order) are
    compared — equivalent to the row-order greedy rule.
    """
    codes = np.empty(len(anchors), dtype=np.int64)
    order = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.diff(group[order])) + 1
    n_clusters = 0
    for rows in np.split(order, bounds):  # one iteration per group
        heads: list[str] = []
        head_ids: list[int] = []
        seen: dict[str, int] = {}
        for row in rows:
            text = str(anchors[row])
            cluster = seen.get(text)
            if cluster is None:
                for head, cid in zip(heads, head_ids):
                    if difflib.SequenceMatcher(None, text, head).ratio() >= threshold:
                        cluster = cid
                        break
                else:
                    cluster = n_clusters
                    n_clusters += 1
                    heads.append(text)
                    head_ids.append(cluster)
                seen[text] = cluster
            codes[row] = cluster
    return codes, n_clusters


@register_estimator("gigpo")
def gigpo(
    batch: RowBatch,
    *,
    mode: Literal["mean_norm", "mean_std_norm"] = "mean_norm",
    gamma: float = 0.95,
    omega: float = 1.0,
    episode_stats: Literal["step", "trajectory"] = "step",
    similarity: bool = False,
    similarity_thresh: float = 0.95,
    invalid_penalty: float = 0.0,
    action_valid: Any = None,
    anchor_codes: Any = None,
) -> np.ndarray:
    """GiGPO (2505.10978): A = A^E + omega * A^S.

    Episode level: A^E = (R(tau) - mean)/(std + EPS) within the group, or R - mean in
    ``mean_norm`` mode. ``episode_stats="step"`` (verl-agent code, default): statistics over all
    step rows of the group; ``"trajectory"`` (paper): one value per trajectory. Group of one
    row (or trajectory): mean 0, std 1.

    Step level: anchor groups = rows of the same group_id with equal canonical
    anchors (any timestep, any trajectory); R_t = sum_{k>=t} gamma^(k-t) r_k; A^S =
    (R_t - mean_stepgroup)/(std_stepgroup + EPS) (or mean only); singleton step group: 0.
    ``similarity``: text anchors clustered greedily by ``difflib`` ratio >= ``similarity_thresh``.

    Invalid-action penalty (verl-agent): for rows with ``action_valid[i] == False``,
    ``invalid_penalty`` is subtracted from that row's episode score and its step return only
    (not discounted into earlier turns). With ``episode_stats="trajectory"`` the mean/std are
    those of the unpenalised trajectory returns and each row's penalised score is normalised by
    them.

    ``anchor_codes`` (the turn table's column, see :func:`anchor_codes`): one integer per row,
    equal exactly where the anchors are; when given, the exact step groups are formed from them
    instead of from the anchors (same advantages, bit for bit). Similarity mode reads the anchors.
    """
    if mode not in ("mean_norm", "mean_std_norm"):
        raise EstimatorError(f"GiGPO mode must be 'mean_norm' or 'mean_std_norm', got {mode!r}")
    if episode_stats not in ("step", "trajectory"):
        raise EstimatorError(f"episode_stats must be 'step' or 'trajectory', got {episode_stats!r}")
    use_std = mode == "mean_std_norm"
    penalty = _invalid_penalty(invalid_penalty, action_valid, len(batch))
    a_episode = _gigpo_episode(batch, penalty, bool(invalid_penalty), use_std, episode_stats)
    anchor, n_anchor = _gigpo_anchor_codes(batch, anchor_codes, similarity, similarity_thresh)
    a_step = _gigpo_step(batch, penalty, bool(invalid_penalty), use_std, gamma, anchor, n_anchor)
    return a_episode + omega * a_step


def _gigpo_anchor_codes(batch: RowBatch, codes: Any, similarity: bool, threshold: float) -> tuple[np.ndarray, int]:
    """Dense codes of GiGPO's anchors: from the interned ``codes`` when given (integers: no
    hashing per row), else from the anchors; similarity clustering needs the anchors' text."""
    if codes is not None and not similarity:
        codes = np.asarray(codes).reshape(-1)
        if len(codes) != len(batch) or codes.dtype.kind not in "iu":
            raise EstimatorError(f"anchor_codes must be {len(batch)} integers (one per row), got {len(codes)} "
                                 f"of dtype {codes.dtype}")
        return _codes(codes)
    if batch.anchors is None:
        raise EstimatorError("the gigpo estimator needs anchors (info['anchor'] per row)")
    if similarity:
        return _similarity_anchor_codes(batch.anchors, batch.group, threshold)
    return _codes(batch.anchors)


def _invalid_penalty(invalid_penalty: float, action_valid: Any, n: int) -> np.ndarray:
    """GiGPO's per-row penalty: ``invalid_penalty`` where ``action_valid`` is False, else 0."""
    if not invalid_penalty:
        return np.zeros(n)
    if action_valid is None:
        raise EstimatorError("invalid_penalty needs action_valid (one bool per row)")
    valid = np.asarray(action_valid, dtype=bool).reshape(-1)
    if len(valid) != n:
        raise EstimatorError(f"action_valid has {len(valid)} entries but there are {n} rows")
    return invalid_penalty * (~valid)


def _gigpo_episode(batch: RowBatch, penalty: np.ndarray, penalised: bool, use_std: bool,
                   episode_stats: str) -> np.ndarray:
    """GiGPO's episode (macro) advantage A^E of every row (see :func:`gigpo`)."""
    if episode_stats == "step":
        scores = batch.traj_returns[batch.traj]
        if penalised:
            scores = scores - penalty
        return _group_normalize(scores, batch.group, batch.n_groups, use_std=use_std, singleton="identity")
    count, mean, std = segment_mean_std(batch.traj_returns, batch.traj_group, batch.n_groups)
    single = count == 1
    mean = np.where(single, 0.0, mean)
    std = np.where(single, 1.0, std + EPS)
    scores = batch.traj_returns[batch.traj] - penalty
    a_episode = scores - mean[batch.group]
    if use_std:
        a_episode = a_episode / std[batch.group]
    return a_episode


def _gigpo_step(batch: RowBatch, penalty: np.ndarray, penalised: bool, use_std: bool, gamma: float,
                anchor: np.ndarray, n_anchor: int) -> np.ndarray:
    """GiGPO's step (micro) advantage A^S: discounted returns along each trajectory, normalised
    within the step groups (rows of a group with the same anchor code)."""
    step_returns = discounted_returns(batch.rewards, batch.traj, batch.positions, gamma)
    if penalised:
        step_returns -= penalty
    step_group, n_step_groups = _pair_codes(batch.group, anchor, n_anchor)
    return _group_normalize(step_returns, step_group, n_step_groups, use_std=use_std, singleton="zero")


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


#: The columns every estimator gets, through :meth:`RowBatch.build` (in its argument order).
BATCH_COLUMNS = ("rewards", "group_ids", "traj_ids", "steps", "anchors", "strata")

#: Per-row columns an estimator receives when its signature names them as keyword parameters.
EXTRA_COLUMNS: dict[str, str] = {
    "action_valid": "bool per row: False where the reply could not be parsed",
    "anchor_codes": "int per row: the anchors interned, equal exactly where the anchors are (GiGPO groups them)",
    "prompt_lengths": "prompt tokens per row",
    "token_counts": "response tokens per row (reinforce_pp whitens over tokens)",
}


def _lookup(name: str) -> Estimator:
    fn = ESTIMATORS.get(name)
    if fn is None:
        close = difflib.get_close_matches(name, ESTIMATORS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise EstimatorError(
            f"unknown estimator {name!r}{hint} (known: {', '.join(sorted(ESTIMATORS))})"
        )
    return fn


def _call(name: str, fn: Estimator, batch: RowBatch, kwargs: dict[str, Any]) -> np.ndarray:
    if len(batch) == 0:
        return np.zeros(0)
    try:
        return fn(batch, **kwargs)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise EstimatorError(f"estimator {name!r}: {exc}") from None
        raise


@functools.cache
def _keyword_parameters(fn: Estimator) -> frozenset[str]:
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = list(inspect.signature(fn).parameters.values())[1:]  # after the batch
    return frozenset(p.name for p in params if p.kind in kinds)


def estimate(
    name: str,
    rewards: Any,
    group_ids: Any,
    traj_ids: Any,
    steps: Any,
    anchors: Any = None,
    strata: Any = None,
    **options: Any,
) -> np.ndarray:
    """One advantage per row from the estimator registered as ``name`` (see module docstring).

    ``options`` are the estimator's keyword options (e.g. ``mode="mean_std_norm"`` for GiGPO,
    ``alpha=0.5`` for ``stratified``, ``token_counts=[...]`` for ``reinforce_pp``).
    """
    fn = _lookup(name)
    return _call(name, fn, RowBatch.build(rewards, group_ids, traj_ids, steps, anchors, strata), options)


def estimate_columns(name: str, columns: Mapping[str, Any], **options: Any) -> np.ndarray:
    """One advantage per row from per-row ``columns`` (the trainer's call, see the module
    docstring): :data:`BATCH_COLUMNS` make the :class:`RowBatch` (``anchors`` and ``strata`` may
    be absent), and each column of :data:`EXTRA_COLUMNS` the estimator names is passed to it
    alongside ``options``."""
    fn = _lookup(name)
    named = _keyword_parameters(fn) & EXTRA_COLUMNS.keys() & columns.keys()
    clash = named & options.keys()
    if clash:
        raise EstimatorError(f"estimator {name!r}: {', '.join(sorted(clash))} is a per-row column the trainer "
                             "supplies, not an option")
    batch = RowBatch.build(*(columns.get(key) for key in BATCH_COLUMNS))
    return _call(name, fn, batch, {**options, **{key: columns[key] for key in sorted(named)}})
