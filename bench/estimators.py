"""Estimator speed on ~1M rows, side by side with straightforward per-row Python loops.

    python bench/estimators.py                 # 4096 groups x 8 trajectories x ~30 turns
    python bench/estimators.py --groups 256    # quick run

Every registered estimator is timed through the public entry point ``turngym.trainers.estimate``
(input validation and group-by coding included) on rows in shuffled order. GiGPO and GRPO are
also computed by the per-row loop references below — the reference for both speed and numbers:
the vectorised results must agree with them to 1e-6. If ``--ref-rows`` is smaller than the
batch, the loops run on the first whole groups holding about that many rows and their time is
extrapolated linearly (the loops are O(n)); the table says so.

GiGPO is then timed with the anchors in each type environments report (#20) on both paths:
passed to ``estimate`` directly, and the trainer's — the turn table interns them once
(``anchor_codes``, timed on its own line: the cost moved there) and the estimator groups the
integer codes. The turn table's own build is timed beside its interning pass.

The results table is written as markdown to ``bench/results/estimators.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from turngym.trainers import ESTIMATORS, estimate
from turngym.trainers.estimators import anchor_codes, estimate_columns

# --------------------------------------------------------------------------------------------
# Reference implementations: one Python iteration per row, dicts for the group-bys.
# --------------------------------------------------------------------------------------------


def _mean_std(values):
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return mean, float("nan")
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def grpo_loop(rewards, group_ids, traj_ids, eps=1e-6):
    """GRPO on trajectory returns, broadcast to rows; singleton group: A = R."""
    returns = defaultdict(float)
    for r, g, t in zip(rewards, group_ids, traj_ids):
        returns[(g, t)] += r
    per_group = defaultdict(list)
    for (g, _), ret in returns.items():
        per_group[g].append(ret)
    stats = {g: _mean_std(v) for g, v in per_group.items()}
    out = []
    for g, t in zip(group_ids, traj_ids):
        values = per_group[g]
        mean, std = stats[g]
        ret = returns[(g, t)]
        out.append(ret if len(values) == 1 else (ret - mean) / (std + eps))
    return np.array(out)


def gigpo_loop(
    rewards, group_ids, traj_ids, steps, anchors, gamma=0.95, omega=1.0, mode="mean_norm", eps=1e-6
):
    """GiGPO with episode statistics over step rows (the verl-agent code default)."""
    use_std = mode == "mean_std_norm"
    n = len(rewards)
    returns = defaultdict(float)
    rows_of_traj = defaultdict(list)
    for i in range(n):
        key = (group_ids[i], traj_ids[i])
        returns[key] += rewards[i]
        rows_of_traj[key].append(i)

    # Episode advantage: statistics over all step rows of the group.
    scores = [returns[(group_ids[i], traj_ids[i])] for i in range(n)]
    per_group = defaultdict(list)
    for i in range(n):
        per_group[group_ids[i]].append(scores[i])
    group_stats = {g: _mean_std(v) + (len(v),) for g, v in per_group.items()}
    a_episode = [0.0] * n
    for i in range(n):
        mean, std, count = group_stats[group_ids[i]]
        if count == 1:
            mean, std = 0.0, 1.0
        else:
            std = std + eps
        a_episode[i] = (scores[i] - mean) / std if use_std else scores[i] - mean

    # Discounted step returns, trajectory by trajectory.
    step_return = [0.0] * n
    for rows in rows_of_traj.values():
        rows.sort(key=lambda i: steps[i])
        acc = 0.0
        for i in reversed(rows):
            acc = rewards[i] + gamma * acc
            step_return[i] = acc

    # Step advantage within (group, anchor) step groups.
    step_groups = defaultdict(list)
    for i in range(n):
        step_groups[(group_ids[i], anchors[i])].append(i)
    a_step = [0.0] * n
    for rows in step_groups.values():
        if len(rows) == 1:
            continue
        mean, std = _mean_std([step_return[i] for i in rows])
        for i in rows:
            a_step[i] = (step_return[i] - mean) / (std + eps) if use_std else step_return[i] - mean
    return np.array([a_episode[i] + omega * a_step[i] for i in range(n)])


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def make_batch(n_groups, trajs_per_group, mean_turns, n_states, seed=0):
    """Rows of a grid-like task: anchors recur from a small per-group state set."""
    rng = np.random.default_rng(seed)
    n_trajs = n_groups * trajs_per_group
    lengths = rng.integers(max(1, mean_turns // 2), mean_turns + mean_turns // 2 + 1, size=n_trajs)
    n = int(lengths.sum())
    traj = np.repeat(np.arange(n_trajs), lengths)
    group = traj // trajs_per_group
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    steps = np.arange(n) - np.repeat(starts, lengths)
    # A random walk over n_states states; every trajectory of a group starts in state 0.
    moves = rng.integers(-1, 2, size=n)
    moves[starts] = 0
    walk = np.cumsum(moves)
    walk -= np.repeat(walk[starts], lengths)
    anchors = np.mod(walk, n_states)
    # A small step cost and a success reward at the last turn for ~40% of trajectories.
    rewards = np.full(n, -0.01)
    success = rng.random(n_trajs) < 0.4
    rewards[np.cumsum(lengths) - 1] += success.astype(float)
    perm = rng.permutation(n)  # rows arrive in any order
    return {
        "rewards": rewards[perm],
        "group_ids": group[perm],
        "traj_ids": traj[perm] % trajs_per_group,
        "steps": steps[perm],
        "anchors": anchors[perm],
        "strata": (lengths[traj] // 10)[perm],
    }


def best_time(fn, repeats):
    """Best (wall seconds, CPU seconds of this process) over ``repeats`` calls, and the result.

    CPU time is reported beside wall time because the benchmark machine is shared: other
    processes inflate wall time, much less this process's own CPU time."""
    wall, cpu, result = math.inf, math.inf, None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall = min(wall, time.perf_counter() - w0)
        cpu = min(cpu, time.process_time() - c0)
    return (wall, cpu), result


def anchor_kinds(batch, n_groups, n_states):
    """The batch's integer anchors as the types environments report them (#20): integers,
    tuples, nested tuples (a search state: question and result ids), and lists (what JSON made
    of tuples before Turns kept them hashable: the per-row slow path). Objects are made in row
    order, as a rollout makes them."""
    states, groups = batch["anchors"].tolist(), batch["group_ids"].tolist()
    questions, docs = [f"q{g}" for g in range(n_groups)], [f"d{a}" for a in range(n_states + 1)]
    yield "integers, numpy array", batch["anchors"]
    yield "integers, Python list (as Turns hold them)", states
    yield 'tuples `("cell", i)`, Python list (as Turns hold them)', [("cell", a) for a in states]
    yield (
        'nested tuples `("q<group>", ("d<i>", "d<i+1>"))`, strings shared (in-process rollouts)',
        [(questions[g], (docs[a], docs[a + 1])) for g, a in zip(groups, states)],
    )
    yield (
        "the same nested tuples, fresh strings per row (read back from JSONL)",
        [(f"q{g}", (f"d{a}", f"d{a + 1}")) for g, a in zip(groups, states)],
    )
    yield 'lists `["cell", i]` (unhashable: canonicalised row by row)', [["cell", a] for a in states]


def time_anchor_kinds(batch, n_groups, n_states, repeats):
    """GiGPO's best times with each kind of anchor, on the two paths: ``direct`` (the anchors
    passed to ``estimate``, coded inside it) and the trainer's, split in two — ``intern`` (the
    turn table's one ``anchor_codes`` pass, where the cost moved) and ``coded`` (the estimator
    given those codes as its ``anchor_codes`` column). Fails unless every kind on both paths
    gives advantages identical to integer anchors."""
    expected = estimate("gigpo", **batch)
    out = {}
    for label, anchors in anchor_kinds(batch, n_groups, n_states):
        columns = dict(batch, anchors=anchors)
        direct, adv = best_time(lambda columns=columns: estimate("gigpo", **columns), repeats)
        intern, codes = best_time(lambda anchors=anchors: anchor_codes(anchors), repeats)
        columns["anchor_codes"] = codes
        coded, adv_coded = best_time(lambda columns=columns: estimate_columns("gigpo", columns), repeats)
        out[label] = {"direct": direct, "intern": intern, "coded": coded}
        for path, got in (("direct", adv), ("interned", adv_coded)):
            if not np.array_equal(got, expected):
                raise SystemExit(f"gigpo with anchors as {label} ({path}): advantages differ from integer anchors")
    return out


def time_turn_table(batch, n_groups, repeats):
    """Where the interning runs now: the turn table's build (one pass over pydantic Turns per
    training step), on the first ``n_groups`` groups with nested anchors fresh per turn (as
    Turns read back from JSONL hold them). Returns (turns, build time, interning time)."""
    from turngym.agents.trajectory import Trajectory, Turn
    from turngym.trainers.turns import TurnTable

    order = np.lexsort((batch["steps"], batch["traj_ids"], batch["group_ids"]))
    order = order[batch["group_ids"][order] < n_groups]
    columns = zip(*(batch[k][order].tolist() for k in ("group_ids", "traj_ids", "steps", "rewards", "anchors")))
    trajs = {}
    for g, t, step, reward, a in columns:
        traj = trajs.setdefault((g, t), Trajectory(traj_id=f"q{g}/{t}", group_id=f"q{g}", task_id=f"q{g}"))
        traj.turns.append(Turn(step=step, reward=reward, anchor=(f"q{g}", (f"d{a}", f"d{a + 1}"))))
    trajectories = list(trajs.values())
    build, table = best_time(lambda: TurnTable.from_trajectories(trajectories), repeats)
    intern, _ = best_time(lambda: anchor_codes(table.anchors), repeats)
    return len(table), build, intern


_INT_LABEL = "integers, numpy array"


def _ratio(t, base):
    return f"{t[0] / base[0]:.2f}x / {t[1] / base[1]:.2f}x"


def anchor_table_lines(by_anchor, n):
    """One markdown table per row order: each path's time and its ratio to GiGPO with integer
    anchors in a numpy array passed directly, same row order."""
    lines = []
    for order, times in by_anchor.items():
        base = times[_INT_LABEL]["direct"]
        lines += [
            "",
            f"GiGPO (mean_norm) on the same rows, {order}, anchors in the types environments report"
            " them (advantages checked identical to integer anchors on both paths); wall / CPU"
            " seconds, ratio = time / time of `estimate` with integer anchors in a numpy array:",
            "",
            "| anchors | `estimate(anchors=...)` (s) | ratio | interning: `anchor_codes` (s) |"
            " ratio | ns per row (CPU) | trainer: `estimate` with the codes (s) | ratio |"
            " interning + estimate: ratio |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for label, t in times.items():
            both = tuple(i + c for i, c in zip(t["intern"], t["coded"]))
            lines.append("| " + " | ".join([
                label, "{:.3f} / {:.3f}".format(*t["direct"]), _ratio(t["direct"], base),
                "{:.3f} / {:.3f}".format(*t["intern"]), _ratio(t["intern"], base),
                f"{t['intern'][1] / n * 1e9:.0f}",
                "{:.3f} / {:.3f}".format(*t["coded"]), _ratio(t["coded"], base), _ratio(both, base),
            ]) + " |")
    return lines


def worst_coded(by_anchor):
    """Per row order, the largest (wall, CPU) ratio of the trainer's estimate over hashable kinds."""
    out = {}
    for order, times in by_anchor.items():
        base = times[_INT_LABEL]["direct"]
        coded = [t["coded"] for label, t in times.items() if not label.startswith("lists")]
        out[order] = (max(c[0] for c in coded) / base[0], max(c[1] for c in coded) / base[1])
    return out


# --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=4096)
    parser.add_argument("--trajs", type=int, default=8, help="trajectories per group")
    parser.add_argument("--turns", type=int, default=30, help="mean turns per trajectory")
    parser.add_argument("--states", type=int, default=16, help="distinct anchors per group")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--table-groups", type=int, default=512, help="groups built into Turns for the turn-table timing"
    )
    parser.add_argument(
        "--ref-rows", type=int, default=0, help="rows for the loop references (0 = all rows)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "estimators.md"
    )
    args = parser.parse_args()

    batch = make_batch(args.groups, args.trajs, args.turns, args.states)
    n = len(batch["rewards"])
    print(f"{n:,} rows, {args.groups} groups x {args.trajs} trajectories x ~{args.turns} turns")

    timings = {}
    for name in sorted(ESTIMATORS):
        seconds, _ = best_time(lambda name=name: estimate(name, **batch), args.repeats)
        timings[name] = seconds
        print(f"  {name:<14} {seconds[0]:7.3f} s wall {seconds[1]:7.3f} s cpu")
    gigpo_std, _ = best_time(lambda: estimate("gigpo", **batch, mode="mean_std_norm"), args.repeats)
    # The same rows with the anchors in the types environments report them (#20), shuffled
    # and in trajectory order (as `trainers.rows.estimator_inputs` passes a batch's turns).
    # The canonical-key path imports turngym.envs.core on first use: warm it up first.
    estimate("gigpo", rewards=[0.0], group_ids=[0], traj_ids=[0], steps=[0], anchors=[("cell", 0)])
    in_order = np.lexsort((batch["steps"], batch["traj_ids"], batch["group_ids"]))
    by_anchor = {
        "shuffled": time_anchor_kinds(batch, args.groups, args.states, args.repeats),
        "in trajectory order": time_anchor_kinds(
            {k: v[in_order] for k, v in batch.items()}, args.groups, args.states, args.repeats
        ),
    }
    table_turns, table_build, table_intern = time_turn_table(batch, args.table_groups, args.repeats)

    # Reference loops on all rows, or on the first whole groups holding ~ref_rows rows.
    if args.ref_rows and args.ref_rows < n:
        order = np.argsort(batch["group_ids"], kind="stable")
        sizes = np.bincount(batch["group_ids"])
        n_ref_groups = max(1, int(np.searchsorted(np.cumsum(sizes), args.ref_rows)) + 1)
        subset = order[np.isin(batch["group_ids"][order], np.arange(n_ref_groups))]
        subset = np.sort(subset)
    else:
        subset = np.arange(n)
    ref = {k: v[subset] for k, v in batch.items()}
    ref_lists = {k: v.tolist() for k, v in ref.items()}
    scale = n / len(subset)

    columns = [ref_lists[k] for k in ("rewards", "group_ids", "traj_ids", "steps", "anchors")]
    gigpo_loop_s, gigpo_ref = best_time(lambda: gigpo_loop(*columns), 1)
    gigpo_std_loop_s, gigpo_std_ref = best_time(
        lambda: gigpo_loop(*columns, mode="mean_std_norm"), 1
    )
    grpo_loop_s, grpo_ref = best_time(lambda: grpo_loop(*columns[:3]), 1)
    gigpo_loop_s, gigpo_std_loop_s, grpo_loop_s = (
        tuple(x * scale for x in pair) for pair in (gigpo_loop_s, gigpo_std_loop_s, grpo_loop_s)
    )

    diff_gigpo = float(np.max(np.abs(estimate("gigpo", **ref) - gigpo_ref)))
    diff_gigpo_std = float(
        np.max(np.abs(estimate("gigpo", **ref, mode="mean_std_norm") - gigpo_std_ref))
    )
    diff_grpo = float(np.max(np.abs(estimate("grpo", **ref) - grpo_ref)))
    for label, diff in (
        ("gigpo", diff_gigpo),
        ("gigpo mean_std_norm", diff_gigpo_std),
        ("grpo", diff_grpo),
    ):
        if not diff <= 1e-6:
            raise SystemExit(f"{label}: vectorised and loop results differ by {diff:.3g} (> 1e-6)")

    extrapolated = len(subset) < n
    note = (
        f"loop time measured on {len(subset):,} rows and extrapolated linearly to {n:,}"
        if extrapolated
        else f"loop time measured on all {n:,} rows"
    )

    def row(label, vec, loop=None, diff=None):
        cells = [label, f"{vec[0]:.3f}", f"{vec[1]:.3f}"]
        if loop is None:
            cells += ["", "", ""]
        else:
            cells += [
                f"{loop[0]:.2f} / {loop[1]:.2f}",
                f"{loop[0] / vec[0]:.0f}x / {loop[1] / vec[1]:.0f}x",
                f"{diff:.1e}",
            ]
        return "| " + " | ".join(cells) + " |"

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# Estimators on ~1M rows",
        "",
        f"`python bench/estimators.py` — {n:,} rows ({args.groups} groups x {args.trajs} trajectories"
        f" x ~{args.turns} turns, {args.states} recurring anchors per group, rows shuffled);"
        f" {platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}; vectorised times"
        f" are the best of {args.repeats} calls of `turngym.trainers.estimate` (validation and"
        " group-by coding included). The machine is shared (1-minute load average"
        f" {load:.1f} at the end of the run), so wall time is inflated; this process's CPU time is"
        " shown beside it.",
        "",
        "| estimator | vectorised wall (s) | vectorised CPU (s) | per-row loop wall / CPU (s) |"
        " speedup wall / CPU | max abs diff vs loop |",
        "|---|---|---|---|---|---|",
        row("gigpo (mean_norm)", timings["gigpo"], gigpo_loop_s, diff_gigpo),
        row("gigpo (mean_std_norm)", gigpo_std, gigpo_std_loop_s, diff_gigpo_std),
        row("grpo", timings["grpo"], grpo_loop_s, diff_grpo),
    ]
    lines += [row(name, timings[name]) for name in sorted(timings) if name not in ("gigpo", "grpo")]
    lines += anchor_table_lines(by_anchor, n)
    lines += [
        "",
        f"- {note}.",
        f"- Targets: GiGPO <= 1 s (measured {timings['gigpo'][0]:.3f} s wall,"
        f" {timings['gigpo'][1]:.3f} s CPU), >= 20x the loop (measured"
        f" {gigpo_loop_s[0] / timings['gigpo'][0]:.0f}x wall, {gigpo_loop_s[1] / timings['gigpo'][1]:.0f}x CPU);"
        " agreement to 1e-6 (checked: the run fails otherwise).",
        "- Target (#20): every hashable anchor kind within 1.5x of integer anchors on the"
        " trainer's path (the `trainer: estimate` column; worst hashable kind "
        + ", ".join(f"{w:.2f}x wall / {c:.2f}x CPU {order}" for order, (w, c) in worst_coded(by_anchor).items())
        + "). The turn table interns the anchors once per step (`anchor_codes`: one C-level"
        " dict pass, one hash per row, Python only on a value's first occurrence) and GiGPO groups"
        " the integers; that pass is the `interning` column, not hidden: it is the cost the"
        " estimator paid before, moved to where the table is built. Unhashable anchors (lists) are"
        " canonicalised row by row.",
        f"- Where the interning runs: `TurnTable.from_trajectories` ({table_turns:,} Turns of the"
        f" first {args.table_groups} groups, nested anchors fresh per turn) takes"
        f" {table_build[1] / table_turns * 1e9:,.0f} ns CPU per turn, of which the `anchor_codes`"
        f" pass {table_intern[1] / table_turns * 1e9:,.0f} ns ({table_intern[1] / table_build[1]:.1%}).",
        "- The per-row loops are `grpo_loop`/`gigpo_loop` in `bench/estimators.py`: plain Python,"
        " dicts for the group-bys, one iteration per row; their numbers are the reference.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
