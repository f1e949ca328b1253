"""Rollout engine overhead: the batched engine vs the same episodes stepped in a plain loop.

Both sides run the same 256 Sokoban episodes (32 tasks x 8 samples) with the same scripted
replies (a random move drawn from each turn's sampling seed), so they take the same turns:

- ``plain``: one episode after another; each turn builds the prompt with the same Agent, calls
  the same scripted policy with a batch of one, steps the env and keeps a Turn record — the
  work of a turn with no batching, threads or engine bookkeeping;
- ``engine``: ``RolloutEngine.run`` — one batched generate per round over all active episodes,
  env steps in the thread pool, Turn records, releases;
- ``env only``: reset + step with the same replies and no prompts at all (for scale).

Measured in text mode (chat-message prompts) and token mode (a byte-level chat tokenizer, so
every prompt goes through apply_chat_template and is tokenised). Usage:
    python bench/rollout.py [--episodes 256] [--max-turns 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from pathlib import Path

import turngym
from turngym.agents.agent import Agent, AgentConfig, EpisodeMemory, Exchange
from turngym.agents.rollout import RolloutConfig, RolloutEngine, derive_seed
from turngym.agents.scripted import ScriptedPolicy
from turngym.agents.trajectory import Trajectory, Turn

ENV_ID = "turngym/Sokoban-v0"
MOVES = ["<action>up</action>", "<action>down</action>", "<action>left</action>", "<action>right</action>"]


def reply(_text: str, seed: int | None) -> str:
    return MOVES[random.Random(seed).randrange(4)]


def byte_tokenizer():
    """The tiny model's tokenizer (byte-level, ChatML tool template), else the tests' own."""
    try:
        from turngym.agents.models import tiny_tokenizer
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "agents"))
        from conftest import (
            build_tokenizer as tiny_tokenizer,  # the test suite's byte-level chat tokenizer
        )
    return tiny_tokenizer()


def plan(engine: RolloutEngine, tasks: list[str]):
    return engine.plan(tasks, run_index=0)


def run_engine(tasks, group, max_turns, tokenizer, concurrency) -> tuple[float, int]:
    policy = ScriptedPolicy(reply, tokenizer=tokenizer)
    cfg = RolloutConfig(group_size=group, max_turns=max_turns, progress=False, concurrency=concurrency)
    engine = RolloutEngine(policy, ENV_ID, tokenizer, cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    trajs = engine.run(tasks, run_index=0)
    elapsed = (time.perf_counter() - t0, time.process_time() - c0)
    assert all(t.status != "error" for t in trajs)
    return elapsed, sum(len(t.turns) for t in trajs)


def run_plain(tasks, group, max_turns, tokenizer, with_agent: bool) -> tuple[float, int]:
    policy = ScriptedPolicy(reply, tokenizer=tokenizer)
    cfg = RolloutConfig(group_size=group, max_turns=max_turns, progress=False)
    specs = RolloutEngine(policy, ENV_ID, tokenizer, cfg).plan(tasks, run_index=0)
    agent = Agent(tokenizer, AgentConfig())
    sampling = cfg.sampling
    turns = 0
    kept: list[Trajectory] = []  # the plain loop keeps the same records the engine returns
    t0, c0 = time.perf_counter(), time.process_time()
    for spec in specs:
        env = turngym.make(ENV_ID)
        obs, _info = env.reset(seed=spec.seed, options={"task": spec.task})
        base = env.unwrapped
        memory = EpisodeMemory(base.instructions, [t.schema() for t in base.tools], obs)
        traj = Trajectory(traj_id=spec.traj_id, group_id=spec.group_id, task_id=str(spec.task), seed=spec.seed)
        anchor = _info.get("anchor")
        for turn in range(max_turns):
            seed = derive_seed(spec.seed, "turn", turn)
            if with_agent:
                built = agent.build(memory)
                completion = policy.generate([built.prompt], sampling([seed]))[0]
                action = completion.text
            else:
                action = reply("", seed)
            obs, reward, terminated, truncated, info = env.step(action)
            turns += 1
            if with_agent:
                traj.turns.append(Turn(
                    step=turn, prompt_ids=built.ids or [], response_ids=completion.token_ids,
                    logprobs=completion.logprobs, prompt_text=built.text, response_text=action, observation=obs,
                    reward=reward, anchor=anchor, stratum=info.get("stratum"), action_valid=info["action_valid"],
                    tool_calls=info["tool_calls"], info={"task_id": info["task_id"]}))
                anchor = info.get("anchor")
                memory.history.append(Exchange(action, obs, bool(info.get("tool_calls"))))
            if terminated or truncated:
                break
        env.close()
        kept.append(traj)
    return (time.perf_counter() - t0, time.process_time() - c0), turns


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=256)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-turns", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "rollout.md"))
    args = ap.parse_args()
    suite = turngym.envs.load_suite("sokoban-6x6-1")
    tasks = [t.id for t in suite.split("train")[: args.episodes // args.group]]
    tok = byte_tokenizer()
    rows = []
    names = ["env only", "plain", "engine", "engine inline"]
    for mode, tokenizer in (("text", None), ("token", tok)):
        wall: dict[str, list[float]] = {k: [] for k in names}
        cpu: dict[str, list[float]] = {k: [] for k in names}
        turns: dict[str, int] = {}
        for _ in range(args.repeats):  # interleaved, so machine noise hits all sides alike
            for name, fn in (
                ("env only", lambda: run_plain(tasks, args.group, args.max_turns, tokenizer, with_agent=False)),
                ("plain", lambda: run_plain(tasks, args.group, args.max_turns, tokenizer, with_agent=True)),
                ("engine", lambda: run_engine(tasks, args.group, args.max_turns, tokenizer, args.concurrency)),
                ("engine inline", lambda: run_engine(tasks, args.group, args.max_turns, tokenizer, 0)),
            ):
                (w, c), n = fn()
                wall[name].append(w)
                cpu[name].append(c)
                turns[name] = n
        assert len(set(turns.values())) == 1, turns
        n = turns["engine"]
        wall_rate = {k: n / min(v) for k, v in wall.items()}
        cpu_rate = {k: n / min(v) for k, v in cpu.items()}
        rows.append((mode, n, wall_rate, cpu_rate))
        print(f"{mode}: turns={n} wall " + " ".join(f"{k}={v:.0f}/s" for k, v in wall_rate.items())
              + " | cpu " + " ".join(f"{k}={v:.0f}/s" for k, v in cpu_rate.items()), flush=True)

    lines = [
        "# Rollout engine overhead",
        "",
        f"`python bench/rollout.py --episodes {args.episodes} --group {args.group} --max-turns {args.max_turns} "
        f"--repeats {args.repeats} --concurrency {args.concurrency}` on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; best of {args.repeats} interleaved repeats.",
        "",
        f"{args.episodes} concurrent {ENV_ID} episodes ({len(tasks)} tasks x {args.group} samples), scripted "
        f"random moves from the per-turn sampling seeds, at most {args.max_turns} turns.",
        "",
        "Rates are turns per second of wall time and per second of CPU time (all threads of the process). "
        "The machine was shared with other engineers' test runs (load average far above the core count), so "
        "wall-clock rates are noisy; CPU time is the steadier measure of the engine's own cost per core.",
        "",
        f"| prompts | turns | clock | env only | plain loop | engine ({args.concurrency} threads) | engine / plain "
        "| engine inline | inline / plain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, n, wall_rate, cpu_rate in rows:
        for clock, rate in (("wall", wall_rate), ("CPU", cpu_rate)):
            lines.append(
                f"| {mode} | {n} | {clock} | {rate['env only']:.0f} | {rate['plain']:.0f} | {rate['engine']:.0f} | "
                f"**{rate['engine'] / rate['plain']:.2f}x** | {rate['engine inline']:.0f} | "
                f"**{rate['engine inline'] / rate['plain']:.2f}x** |")
    lines += [
        "",
        "- *plain loop*: the same per-turn work (Agent prompt, scripted generate, env step, a Turn record kept "
        "until the end) one episode at a time, no batching or threads. *engine*: `RolloutEngine.run` (one batched generate per round, env "
        "steps in the thread pool, Turn records). *engine inline*: the same with `concurrency=0` (env steps "
        "in the engine's thread). *env only*: reset + step, no prompts (for scale).",
        "- *text*: prompts are chat messages (HTTP-policy mode). *token*: every prompt goes through the chat "
        "template and the tiny model's byte-level tokenizer (one token per byte, so tokenisation dominates).",
        "- Target: engine >= 0.9x the plain loop.",
        "",
    ]  # findings are added by hand under the table
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
