"""Advantage estimators: every worked example of docs/algorithms.md, to 1e-4."""

import numpy as np
import pytest

from turngym.trainers import ESTIMATORS, EstimatorError, estimate, register_estimator
from turngym.trainers.estimators import RowBatch, _pair_codes, anchor_codes, discounted_returns


def one_turn_each(rewards):
    """A single group of single-turn trajectories."""
    n = len(rewards)
    return dict(rewards=rewards, group_ids=[0] * n, traj_ids=list(range(n)), steps=[0] * n)


# --- outcome estimators (section 2) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("grpo", [1.499997, -0.499999, -0.499999, -0.499999]),
        ("dr_grpo", [0.75, -0.25, -0.25, -0.25]),
        ("rloo", [1.0, -1 / 3, -1 / 3, -1 / 3]),
        ("reinforce_pp", [1.5, -0.5, -0.5, -0.5]),
    ],
)
def test_outcome_estimators_on_one_success_in_four(name, expected):
    adv = estimate(name, **one_turn_each([1.0, 0.0, 0.0, 0.0]))
    np.testing.assert_allclose(adv, expected, atol=1e-4)


def test_grpo_exact_values_to_six_places():
    adv = estimate("grpo", **one_turn_each([1.0, 0.0, 0.0, 0.0]))
    np.testing.assert_allclose(adv, [1.499997, -0.499999, -0.499999, -0.499999], atol=1e-6)


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo"])
def test_singleton_group_gets_its_reward(name):
    adv = estimate(
        name, rewards=[0.7, 1.0, 0.0], group_ids=[5, 6, 6], traj_ids=[0, 0, 1], steps=[0, 0, 0]
    )
    assert adv[0] == pytest.approx(0.7)


def test_grpo_singleton_flag_off_gives_zero():
    adv = estimate(
        "grpo", rewards=[0.7], group_ids=[0], traj_ids=[0], steps=[0], singleton_as_reward=False
    )
    assert adv[0] == 0.0


def test_reinforce_pp_whitens_over_tokens():
    # lengths [2,1,1,1]: tokens [A1, A1, A2, A3, A4] -> [1.0954, 1.0954, -0.7303, -0.7303, -0.7303]
    adv = estimate("reinforce_pp", **one_turn_each([1.0, 0.0, 0.0, 0.0]), token_counts=[2, 1, 1, 1])
    np.testing.assert_allclose(adv, [1.0954, -0.7303, -0.7303, -0.7303], atol=1e-4)
    tokens = np.repeat(adv, [2, 1, 1, 1])
    assert tokens.mean() == pytest.approx(0.0, abs=1e-12)


def test_outcome_estimators_use_trajectory_return_and_trajectory_statistics():
    # Two trajectories: 3 turns summing to 1, 1 turn with 0 -> GRPO on returns [1, 0].
    adv = estimate(
        "grpo",
        rewards=[0.0, 0.5, 0.5, 0.0],
        group_ids=["g", "g", "g", "g"],
        traj_ids=["a", "a", "a", "b"],
        steps=[0, 1, 2, 0],
    )
    expected = (1 - 0.5) / (np.sqrt(0.5) + 1e-6)
    np.testing.assert_allclose(adv, [expected, expected, expected, -expected], atol=1e-9)


def test_traj_ids_are_scoped_by_group():
    adv = estimate(
        "dr_grpo",
        rewards=[1, 0, 1, 1],
        group_ids=[0, 0, 1, 1],
        traj_ids=[0, 1, 0, 1],
        steps=[0] * 4,
    )
    np.testing.assert_allclose(adv, [0.5, -0.5, 0.0, 0.0])


# --- GiGPO (section 3) ------------------------------------------------------------------------

# tau1 succeeds at t2, tau3 at t3, tau2 and tau4 fail.
GIGPO_EXAMPLE = dict(
    rewards=[0, 1, 0, 0, 0, 0, 1, 0, 0],
    group_ids=[0] * 9,
    traj_ids=[1, 1, 2, 2, 3, 3, 3, 4, 4],
    steps=[1, 2, 1, 2, 1, 2, 3, 1, 2],
    anchors=["s0", "s1", "s0", "s2", "s0", "s1", "s3", "s0", "s1"],
)
GIGPO_CODE = [0.9313, 0.7944, -1.0187, -0.5556, 0.8838, 0.7444, 0.4444, -1.0187, -1.2056]
GIGPO_PAPER = [0.9869, 0.8500, -0.9631, -0.5000, 0.9394, 0.8000, 0.5000, -0.9631, -1.1500]
GIGPO_STD = [1.7531, 1.4644, -1.9195, -1.0541, 1.6643, 1.3757, 0.8433, -1.9195, -2.2077]


def test_gigpo_worked_example_code_episode_stats():
    np.testing.assert_allclose(estimate("gigpo", **GIGPO_EXAMPLE), GIGPO_CODE, atol=1e-4)


def test_gigpo_worked_example_paper_episode_stats():
    adv = estimate("gigpo", **GIGPO_EXAMPLE, episode_stats="trajectory")
    np.testing.assert_allclose(adv, GIGPO_PAPER, atol=1e-4)


def test_gigpo_worked_example_mean_std_norm():
    adv = estimate("gigpo", **GIGPO_EXAMPLE, mode="mean_std_norm")
    np.testing.assert_allclose(adv, GIGPO_STD, atol=1e-4)


def test_gigpo_components_of_worked_example():
    a_episode = estimate("gigpo", **GIGPO_EXAMPLE, omega=0.0)
    np.testing.assert_allclose(
        a_episode, [4 / 9, 4 / 9, -5 / 9, -5 / 9, 4 / 9, 4 / 9, 4 / 9, -5 / 9, -5 / 9], atol=1e-9
    )
    a_step = (estimate("gigpo", **GIGPO_EXAMPLE, omega=2.0) - a_episode) / 2.0
    np.testing.assert_allclose(
        a_step, [0.486875, 0.35, -0.463125, 0, 0.439375, 0.30, 0, -0.463125, -0.65], atol=1e-9
    )


def test_gigpo_is_invariant_to_row_order():
    perm = np.random.default_rng(0).permutation(9)
    shuffled = {k: [v[i] for i in perm] for k, v in GIGPO_EXAMPLE.items()}
    adv = estimate("gigpo", **shuffled, mode="mean_std_norm")
    np.testing.assert_allclose(adv, np.asarray(GIGPO_STD)[perm], atol=1e-4)


def test_gigpo_anchor_groups_stay_inside_their_group():
    # Same anchor in two groups: no shared step group, so each singleton step group gives A^S = 0.
    adv = estimate(
        "gigpo", rewards=[1, 0], group_ids=[0, 1], traj_ids=[0, 0], steps=[0, 0], anchors=["s", "s"]
    )
    np.testing.assert_allclose(adv, [1.0, 0.0])  # singleton groups: A^E = R, A^S = 0


def test_gigpo_structured_anchors_use_canonical_keys():
    dict_anchors = [
        {"x": 1, "y": [2, 3]},
        {"y": (2, 3), "x": 1},
        np.array([[1, 2]]),
        np.array([[1, 2]]),
    ]
    adv = estimate(
        "gigpo",
        rewards=[1, 0, 1, 0],
        group_ids=[0] * 4,
        traj_ids=[0, 1, 2, 3],
        steps=[0] * 4,
        anchors=dict_anchors,
        omega=1.0,
    )
    same = estimate(
        "gigpo",
        rewards=[1, 0, 1, 0],
        group_ids=[0] * 4,
        traj_ids=[0, 1, 2, 3],
        steps=[0] * 4,
        anchors=["a", "a", "b", "b"],
    )
    np.testing.assert_allclose(adv, same)
    mixed = estimate(
        "gigpo",
        rewards=[1, 0, 1, 0],
        group_ids=[0] * 4,
        traj_ids=[0, 1, 2, 3],
        steps=[0] * 4,
        anchors=[(1, 2), [1, 2], "b", "b"],
    )  # a tuple and a list with equal items
    np.testing.assert_allclose(mixed, same)
    assert not np.allclose(
        adv,
        estimate(
            "gigpo",
            rewards=[1, 0, 1, 0],
            group_ids=[0] * 4,
            traj_ids=[0, 1, 2, 3],
            steps=[0] * 4,
            anchors=["a", "b", "c", "d"],
        ),
    )


def _recurring_anchor_batch(n_groups=64, trajs=8, turns=12, states=6, seed=0):
    """Shuffled rows whose integer anchors recur within and across trajectories."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, turns + 1, size=n_groups * trajs)
    traj = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    steps = np.arange(len(traj)) - np.repeat(starts, lengths)
    perm = rng.permutation(len(traj))
    return {
        "rewards": rng.choice([0.0, -0.01, 1.0], size=len(traj))[perm],
        "group_ids": (traj // trajs)[perm],
        "traj_ids": (traj % trajs)[perm],
        "steps": steps[perm],
        "anchors": rng.integers(0, states, size=len(traj))[perm],
    }


@pytest.mark.parametrize("mode", ["mean_norm", "mean_std_norm"])
def test_gigpo_tuple_anchors_give_the_advantages_of_integer_anchors(mode):
    """Any hashable anchor takes the same path to the same numbers (#20): integers, tuples,
    nested tuples, numpy scalars inside tuples; lists (unhashable) agree through canonical keys."""
    batch = _recurring_anchor_batch()
    ints = batch["anchors"].tolist()
    expected = estimate("gigpo", **batch, mode=mode)
    kinds = {
        "list of ints": ints,
        "tuples": [("cell", a) for a in ints],
        "nested tuples": [("question", (f"d{a}", f"d{a + 1}")) for a in ints],
        "numpy scalars in tuples": [(np.int64(a), "x") for a in ints],
        "strings": [f"state {a}" for a in ints],
        "lists (JSON)": [["cell", a] for a in ints],
    }
    for kind, anchors in kinds.items():
        adv = estimate("gigpo", **dict(batch, anchors=anchors), mode=mode)
        assert np.array_equal(adv, expected), kind
    # and the anchors matter: merging two states changes the advantages
    merged = [min(a, 1) for a in ints]
    assert not np.array_equal(estimate("gigpo", **dict(batch, anchors=merged), mode=mode), expected)


@pytest.mark.parametrize("mode", ["mean_norm", "mean_std_norm"])
@pytest.mark.parametrize("fresh", [False, True], ids=["shared strings", "fresh strings per row"])
def test_gigpo_interned_nested_anchors_give_the_advantages_of_integer_anchors(mode, fresh):
    """Nested tuple anchors (a search state), as objects shared by rows or rebuilt per row (read
    back from JSONL), give bit-identical advantages raw and interned by ``anchor_codes`` (#20)."""
    batch = _recurring_anchor_batch()
    ints, groups = batch["anchors"].tolist(), batch["group_ids"].tolist()
    if fresh:
        nested = [(f"q{g}", (f"d{a}", f"d{a + 1}")) for g, a in zip(groups, ints)]
    else:
        questions, docs = [f"q{g}" for g in range(max(groups) + 1)], [f"d{a}" for a in range(max(ints) + 2)]
        nested = [(questions[g], (docs[a], docs[a + 1])) for g, a in zip(groups, ints)]
    expected = estimate("gigpo", **batch, mode=mode)
    codes = anchor_codes(nested)
    assert codes.dtype == np.int64 and len(set(codes.tolist())) == len(set(nested))
    assert np.array_equal(estimate("gigpo", **dict(batch, anchors=nested), mode=mode), expected)
    assert np.array_equal(estimate("gigpo", **dict(batch, anchors=nested), mode=mode, anchor_codes=codes), expected)
    without_anchors = {k: v for k, v in batch.items() if k != "anchors"}
    assert np.array_equal(estimate("gigpo", **without_anchors, mode=mode, anchor_codes=codes), expected)


@pytest.mark.parametrize("name", ["gigpo", "grpo", "stratified"])
def test_ids_unique_across_groups_give_the_advantages_of_ids_scoped_by_group(name):
    """Trajectory ids unique across groups (the rollout's ``task@run/g``) and anchors that name
    their group take the O(n) pair coding, not a sort, to the same advantages."""
    batch = _recurring_anchor_batch()
    batch["strata"] = batch["anchors"]
    scoped = estimate(name, **batch)
    groups, trajs, ints = batch["group_ids"].tolist(), batch["traj_ids"].tolist(), batch["anchors"].tolist()
    unique = dict(batch, traj_ids=[f"task{g}@s0r0/{t}" for g, t in zip(groups, trajs)],
                  anchors=[(f"q{g}", a) for g, a in zip(groups, ints)])
    np.testing.assert_allclose(estimate(name, **unique), scoped, rtol=0, atol=1e-12)


def test_pair_codes_of_b_values_owned_by_one_a_keep_the_sorted_pairs_order_within_each_a():
    """The O(n) path numbers pairs by ``b`` (no sort); within each ``a`` that is the order of the
    sorted pairs, so per-segment sums run in the same order: bit-identical statistics."""
    rng = np.random.default_rng(0)
    b = rng.permutation(np.repeat(np.arange(5000), 3))
    a = b % 997  # each b value with one a only; keys span 997 * 5000 >> 4 * 15000
    codes, n = _pair_codes(a, b, 5000)
    sorted_codes, n_sorted = np.unique(a * 5000 + b, return_inverse=True)[1], 5000
    assert n == n_sorted and np.array_equal(codes, b)
    for owner in (0, 1, 996):
        rows = a == owner
        assert np.array_equal(np.argsort(codes[rows], kind="stable"), np.argsort(sorted_codes[rows], kind="stable"))


def test_gigpo_anchor_codes_are_checked_and_similarity_reads_the_anchors():
    rows = dict(rewards=[1.0, 0.0, 0.0, 1.0], group_ids=[0] * 4, traj_ids=[0, 0, 1, 1], steps=[0, 1, 0, 1])
    text = ["the cat sat", "a dog ran", "the cat sat!", "a dog ran."]
    similar = estimate("gigpo", **rows, anchors=text, similarity=True, similarity_thresh=0.9)
    # codes that tell every row apart would zero the step advantages; similarity mode ignores them
    assert np.array_equal(estimate("gigpo", **rows, anchors=text, similarity=True, similarity_thresh=0.9,
                                   anchor_codes=[0, 1, 2, 3]), similar)
    with pytest.raises(EstimatorError, match="anchor_codes must be 4 integers"):
        estimate("gigpo", **rows, anchor_codes=[0, 1])
    with pytest.raises(EstimatorError, match="anchor_codes must be 4 integers"):
        estimate("gigpo", **rows, anchor_codes=["a", "b", "c", "d"])
    with pytest.raises(EstimatorError, match="needs anchors"):
        estimate("gigpo", **rows)


def test_stratified_tuple_strata_give_the_advantages_of_integer_strata():
    batch = _recurring_anchor_batch(seed=1)
    strata = batch.pop("anchors")
    expected = estimate("stratified", **batch, strata=strata)
    as_tuples = [("calls", int(s)) for s in strata]
    assert np.array_equal(estimate("stratified", **batch, strata=as_tuples), expected)


def test_gigpo_invalid_action_penalty_is_not_propagated_backward():
    # traj A: (x, r 0, valid), (y, r 1, INVALID); traj B: (x, 0), (y, 0); gamma 0.5, coef 0.1.
    # Step returns A: [0 + 0.5*1, 1 - 0.1] = [0.5, 0.9] (the penalty is not discounted into t1).
    # Episode scores (step stats): [1, 0.9, 0, 0], mean 0.475.
    adv = estimate(
        "gigpo",
        rewards=[0, 1, 0, 0],
        group_ids=[0] * 4,
        traj_ids=["A", "A", "B", "B"],
        steps=[0, 1, 0, 1],
        anchors=["x", "y", "x", "y"],
        gamma=0.5,
        invalid_penalty=0.1,
        action_valid=[True, False, True, True],
    )
    np.testing.assert_allclose(
        adv, [0.525 + 0.25, 0.425 + 0.45, -0.475 - 0.25, -0.475 - 0.45], atol=1e-9
    )


def test_gigpo_invalid_penalty_requires_validity():
    with pytest.raises(EstimatorError, match="action_valid"):
        estimate("gigpo", **GIGPO_EXAMPLE, invalid_penalty=0.1)


def test_gigpo_similarity_mode_clusters_near_identical_text():
    base = "abcdefghijklmnopqrst"
    near = "abcdefghijklmnopqrsX"  # ratio 2*19/40 = 0.95
    inputs = dict(rewards=[1, 0, 1, 0], group_ids=[0] * 4, traj_ids=[0, 1, 2, 3], steps=[0] * 4)
    similar = estimate("gigpo", **inputs, anchors=[base, near, "zzzz", "zzzy"], similarity=True)
    exact = estimate("gigpo", **inputs, anchors=["A", "A", "B", "C"])  # "zzzz"~"zzzy": 0.75
    np.testing.assert_allclose(similar, exact)
    strict = estimate(
        "gigpo",
        **inputs,
        anchors=[base, near, "zzzz", "zzzy"],
        similarity=True,
        similarity_thresh=0.99,
    )
    np.testing.assert_allclose(strict, estimate("gigpo", **inputs, anchors=["A", "B", "C", "D"]))


def test_gigpo_similarity_joins_the_first_cluster_by_its_first_member():
    # thresh 0.7: "aaaa" founds cluster 0; "aaab" (ratio 0.75 to the head) joins it; "aabb" is
    # 0.75 from the member "aaab" but only 0.5 from the head "aaaa", so it founds its own cluster.
    inputs = dict(rewards=[1, 0, 0.5], group_ids=[0] * 3, traj_ids=[0, 1, 2], steps=[0] * 3)
    got = estimate(
        "gigpo", **inputs, anchors=["aaaa", "aaab", "aabb"], similarity=True, similarity_thresh=0.7
    )
    np.testing.assert_allclose(got, estimate("gigpo", **inputs, anchors=["A", "A", "B"]))


def reference_discounted(rewards, gamma):
    out, acc = np.empty(len(rewards)), 0.0
    for t in range(len(rewards) - 1, -1, -1):
        acc = rewards[t] + gamma * acc
        out[t] = acc
    return out


@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.95, 0.999, 1.0])
def test_discounted_returns_match_a_loop_on_long_and_short_trajectories(gamma):
    rng = np.random.default_rng(1)
    lengths = [1, 2, 63, 64, 65, 4000, 7, 130]  # crosses block boundaries and a long trajectory
    rewards = [rng.normal(size=n) for n in lengths]
    segment = np.repeat(np.arange(len(lengths)), lengths)
    position = np.concatenate([np.arange(n) for n in lengths])
    want = np.concatenate([reference_discounted(r, gamma) for r in rewards])
    perm = rng.permutation(len(want))  # rows in any order
    got = discounted_returns(np.concatenate(rewards)[perm], segment[perm], position[perm], gamma)
    np.testing.assert_allclose(got, want[perm], rtol=1e-9, atol=1e-9)
    assert np.all(np.isfinite(got))


def test_steps_need_not_be_consecutive():
    # Steps (10, 20, 50) rank as positions (0, 1, 2): same advantages as steps (0, 1, 2).
    base = dict(
        rewards=[0, 1, 0, 0, 0, 0],
        group_ids=[0] * 6,
        traj_ids=[0, 0, 0, 1, 1, 1],
        anchors=["a", "b", "c", "a", "b", "c"],
        gamma=0.5,
    )
    gapped = estimate("gigpo", **base, steps=[50, 10, 20, 2, 0, 1])
    plain = estimate("gigpo", **base, steps=[2, 0, 1, 2, 0, 1])
    np.testing.assert_allclose(gapped, plain)
    # Trajectory 0 is (pos 2, pos 0, pos 1) with rewards (0, 1, 0): returns (0, 1, 0); trajectory
    # 1 returns 0 everywhere. Only anchor "b" (position 0) differs: step advantages +-0.5.
    a_step = estimate("gigpo", **base, steps=[50, 10, 20, 2, 0, 1], omega=1.0) - estimate(
        "gigpo", **base, steps=[50, 10, 20, 2, 0, 1], omega=0.0
    )
    np.testing.assert_allclose(a_step, [0.0, 0.5, 0.0, 0.0, -0.5, 0.0])


@pytest.mark.parametrize("steps", [[3, 3], [0, 0, 2], [0, 5, 5]])
def test_duplicate_steps_are_rejected_on_every_path(steps):
    n = len(steps)
    with pytest.raises(EstimatorError, match="same step"):
        estimate(
            "gigpo",
            rewards=[0] * n,
            group_ids=[0] * n,
            traj_ids=[0] * n,
            steps=steps,
            anchors=list("abc")[:n],
        )


def test_gigpo_on_a_long_trajectory_stays_finite_and_exact():
    n = 3000
    rewards = np.zeros(n)
    rewards[-1] = 1.0
    adv = estimate(
        "gigpo",
        rewards=np.r_[rewards, np.zeros(n)],
        group_ids=np.zeros(2 * n, int),
        traj_ids=np.repeat([0, 1], n),
        steps=np.r_[np.arange(n), np.arange(n)],
        anchors=np.r_[np.arange(n), np.arange(n)],
        gamma=0.95,
        omega=1.0,
    )
    assert np.all(np.isfinite(adv))
    # Step t of the successful trajectory: A^E = 0.5, A^S = (0.95^(n-1-t) - mean)/1 = 0.95^(n-1-t)/2.
    t = np.arange(n)
    np.testing.assert_allclose(adv[:n], 0.5 + 0.5 * 0.95 ** (n - 1 - t), atol=1e-12)


# --- Flow-GRPO (section 4) --------------------------------------------------------------------

FLOW_EXAMPLE = dict(
    rewards=[0, 0, 1, 0, 0, 0, 0, 1],  # outcome at the last turn: R = [1, 0, 0, 1]
    group_ids=[0] * 8,
    traj_ids=[0, 0, 0, 1, 2, 2, 3, 3],  # turns [3, 1, 2, 2]
    steps=[0, 1, 2, 0, 0, 1, 0, 1],
)


def test_flow_grpo_code_statistics_over_turn_rows():
    adv = estimate("flow_grpo", **FLOW_EXAMPLE)
    np.testing.assert_allclose(adv, [0.7246] * 3 + [-1.2076] * 3 + [0.7246] * 2, atol=1e-4)


def test_flow_grpo_paper_statistics_over_trajectories():
    adv = estimate("flow_grpo", **FLOW_EXAMPLE, paper_statistics=True)
    np.testing.assert_allclose(adv, [0.8660] * 3 + [-0.8660] * 3 + [0.8660] * 2, atol=1e-4)


# --- Stratified GRPO (section 5) --------------------------------------------------------------

STRAT = dict(**one_turn_each([0, 1, 1, 1, 0, 1]), strata=[0, 0, 1, 1, 1, 2])


def test_stratified_alpha_zero_is_grpo():
    adv = estimate("stratified", **STRAT, alpha=0.0)
    np.testing.assert_allclose(adv, [-1.2910, 0.6455, 0.6455, 0.6455, -1.2910, 0.6455], atol=1e-4)


def test_stratified_alpha_one_is_san():
    adv = estimate("stratified", **STRAT, alpha=1.0)
    np.testing.assert_allclose(adv, [-0.7071, 0.7071, 0.5774, 0.5774, -1.1547, 0.0], atol=1e-4)


def test_stratified_default_alpha():
    adv = estimate("stratified", **STRAT)
    np.testing.assert_allclose(adv, [-0.8239, 0.6948, 0.5910, 0.5910, -1.1820, 0.1291], atol=1e-4)


def test_stratified_uses_the_stratum_of_the_last_turn():
    # Trajectory 0 has two turns; its stratum grows 0 -> 1 (one search call made).
    two_turns = estimate(
        "stratified",
        rewards=[0, 0, 1, 1, 0],
        group_ids=[0] * 5,
        traj_ids=[0, 0, 1, 2, 3],
        steps=[1, 0, 0, 0, 0],
        strata=[(1,), (0,), (0,), (1,), (1,)],
    )
    # Same trajectories flattened to one turn, strata [1, 0, 1, 1].
    flat = estimate("stratified", **one_turn_each([0, 1, 1, 0]), strata=[(1,), (0,), (1,), (1,)])
    np.testing.assert_allclose(two_turns, np.r_[flat[0], flat])


def test_stratified_needs_strata():
    with pytest.raises(EstimatorError, match="strata"):
        estimate("stratified", **one_turn_each([0, 1]))


# --- registry and input checks ----------------------------------------------------------------


def test_registry_holds_every_named_estimator():
    assert {"grpo", "dr_grpo", "rloo", "reinforce_pp", "gigpo", "flow_grpo", "stratified"} <= set(
        ESTIMATORS
    )


def test_unknown_estimator_suggests_a_name():
    with pytest.raises(EstimatorError, match="did you mean 'gigpo'"):
        estimate("gigpoo", **one_turn_each([1, 0]))


def test_unknown_option_is_a_clear_error():
    with pytest.raises(EstimatorError, match="grpo"):
        estimate("grpo", **one_turn_each([1, 0]), gamma=0.9)


def test_duplicate_steps_in_a_trajectory_are_rejected():
    with pytest.raises(EstimatorError, match="same step"):
        estimate(
            "gigpo",
            rewards=[0, 1],
            group_ids=[0, 0],
            traj_ids=[0, 0],
            steps=[3, 3],
            anchors=["a", "b"],
        )


def test_length_mismatch_is_rejected():
    with pytest.raises(EstimatorError, match="traj_ids"):
        estimate("grpo", rewards=[0, 1], group_ids=[0, 0], traj_ids=[0], steps=[0, 0])


def test_adding_an_estimator_is_one_function_and_one_line():
    def constant_baseline(batch: RowBatch, *, baseline: float = 0.5) -> np.ndarray:
        return batch.traj_returns[batch.traj] - baseline

    register_estimator("test_constant_baseline", constant_baseline)
    try:
        adv = estimate("test_constant_baseline", **one_turn_each([1.0, 0.0]), baseline=0.25)
        np.testing.assert_allclose(adv, [0.75, -0.25])
    finally:
        del ESTIMATORS["test_constant_baseline"]


def test_public_api_is_guarded():
    import turngym.trainers as trainers

    assert set(trainers.__all__) == {
        "ESTIMATORS",
        "EstimatorError",
        "FillResult",
        "LossConfig",
        "RowBatch",
        "aggregate",
        "entropy_from_logits",
        "estimate",
        "fill_batch",
        "fill_to_targets",
        "generation_weights",
        "informative_group_mask",
        "is_informative",
        "kl_penalty",
        "logprob_mismatch",
        "overlong_penalty",
        "policy_loss",
        "register_estimator",
        "sampler_multipliers",
        "target_counts",
        "task_weight_gradient",
        "task_weights",
        "update_task_logits",
        "update_zero_gradient_rate",
    }
    assert all(hasattr(trainers, name) for name in trainers.__all__)


def test_importing_trainers_stays_cheap():
    """Only torch, numpy and pydantic on top of what `import turngym` already loads."""
    import subprocess
    import sys

    code = (
        "import sys, turngym; before = set(sys.modules); import turngym.trainers; "
        "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
        "print(sorted(new & {'transformers', 'peft', 'matplotlib', 'tensorboard', 'accelerate', "
        "'scipy', 'pandas', 'datasets', 'gymnasium'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
