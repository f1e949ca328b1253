"""Rollout engine overhead: the batched engine vs the same episodes stepped in a plain loop.

Both sides run the same 256 Sokoban episodes (32 tasks x 8 samples) with the same scripted
replies (a random move drawn from each turn's sampling seed), so they take the same turns:

- ``plain``: one episode after another; each turn builds the prompt with the same Agent, calls
  the same scripted policy with a batch of one and steps the env — the work of a turn with no
  batching, threads or bookkeeping;
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

from turngym.agents.agent import Agent, AgentConfig, EpisodeMemory, Exchange
from turngym.agents.rollout import RolloutConfig, RolloutEngine, derive_seed
from turngym.agents.scripted import ScriptedPolicy

import turngym

ENV_ID = "turngym/Sokoban-v0"
MOVES = ["<action>up</action>", "<action>down</action>", "<action>left</action>", "<action>right</action>"]


def reply(_text: str, seed: int | None) -> str:
    return MOVES[random.Random(seed).randrange(4)]


def byte_tokenizer():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "agents"))
    from conftest import build_tokenizer  # the test suite's local byte-level chat tokenizer

    return build_tokenizer()


def plan(engine: RolloutEngine, tasks: list[str]):
    return engine.plan(tasks, run_index=0)


def run_engine(tasks, group, max_turns, tokenizer, concurrency) -> tuple[float, int]:
    policy = ScriptedPolicy(reply, tokenizer=tokenizer)
    cfg = RolloutConfig(group_size=group, max_turns=max_turns, progress=False, concurrency=concurrency)
    engine = RolloutEngine(policy, ENV_ID, tokenizer, cfg)
    t0 = time.perf_counter()
    trajs = engine.run(tasks, run_index=0)
    elapsed = time.perf_counter() - t0
    assert all(t.status != "error" for t in trajs)
    return elapsed, sum(len(t.turns) for t in trajs)


def run_plain(tasks, group, max_turns, tokenizer, with_agent: bool) -> tuple[float, int]:
    policy = ScriptedPolicy(reply, tokenizer=tokenizer)
    cfg = RolloutConfig(group_size=group, max_turns=max_turns, progress=False)
    specs = RolloutEngine(policy, ENV_ID, tokenizer, cfg).plan(tasks, run_index=0)
    agent = Agent(tokenizer, AgentConfig())
    sampling = cfg.sampling
    turns = 0
    t0 = time.perf_counter()
    for spec in specs:
        env = turngym.make(ENV_ID)
        obs, _info = env.reset(seed=spec.seed, options={"task": spec.task})
        base = env.unwrapped
        memory = EpisodeMemory(base.instructions, [t.schema() for t in base.tools], obs)
        for turn in range(max_turns):
            seed = derive_seed(spec.seed, "turn", turn)
            if with_agent:
                prompt = agent.build(memory).prompt
                action = policy.generate([prompt], sampling([seed]))[0].text
            else:
                action = reply("", seed)
            obs, _r, terminated, truncated, info = env.step(action)
            turns += 1
            if with_agent:
                memory.history.append(Exchange(action, obs, bool(info.get("tool_calls"))))
            if terminated or truncated:
                break
        env.close()
    return time.perf_counter() - t0, turns


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
    for mode, tokenizer in (("text", None), ("token", tok)):
        times: dict[str, list[float]] = {"env only": [], "plain": [], "engine": [], "engine inline": []}
        turns: dict[str, int] = {}
        for _ in range(args.repeats):  # interleaved, so machine noise hits all sides alike
            for name, fn in (
                ("env only", lambda: run_plain(tasks, args.group, args.max_turns, tokenizer, with_agent=False)),
                ("plain", lambda: run_plain(tasks, args.group, args.max_turns, tokenizer, with_agent=True)),
                ("engine", lambda: run_engine(tasks, args.group, args.max_turns, tokenizer, args.concurrency)),
                ("engine inline", lambda: run_engine(tasks, args.group, args.max_turns, tokenizer, 0)),
            ):
                elapsed, n = fn()
                times[name].append(elapsed)
                turns[name] = n
        assert turns["plain"] == turns["engine"] == turns["env only"], turns
        best = {k: min(v) for k, v in times.items()}
        rate = {k: turns["engine"] / v for k, v in best.items()}
        rows.append((mode, turns["engine"], rate, times))
        print(f"{mode}: turns={turns['engine']} " + " ".join(f"{k}={v:.0f}/s" for k, v in rate.items())
              + f" engine/plain={rate['engine'] / rate['plain']:.3f}"
              + f" inline/plain={rate['engine inline'] / rate['plain']:.3f}", flush=True)

    lines = [
        "# Rollout engine overhead",
        "",
        f"`python bench/rollout.py --episodes {args.episodes} --group {args.group} --max-turns {args.max_turns} "
        f"--repeats {args.repeats} --concurrency {args.concurrency}` on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()} (shared machine: timings are noisy; "
        f"best of {args.repeats} interleaved repeats).",
        "",
        f"{args.episodes} concurrent {ENV_ID} episodes ({len(tasks)} tasks x {args.group} samples), scripted "
        f"random moves from the per-turn sampling seeds, at most {args.max_turns} turns.",
        "",
        f"| prompts | turns | env only (turns/s) | plain loop (turns/s) | engine, {args.concurrency} threads "
        "(turns/s) | engine / plain | engine inline (turns/s) | inline / plain |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, n, rate, _ in rows:
        lines.append(f"| {mode} | {n} | {rate['env only']:.0f} | {rate['plain']:.0f} | {rate['engine']:.0f} | "
                     f"**{rate['engine'] / rate['plain']:.2f}x** | {rate['engine inline']:.0f} | "
                     f"**{rate['engine inline'] / rate['plain']:.2f}x** |")
    lines += [
        "",
        "- *plain loop*: the same per-turn work (Agent prompt, scripted generate, env step) one episode at a "
        "time, no batching or threads. *engine*: `RolloutEngine.run` (one batched generate per round, env "
        "steps in the thread pool, Turn records). *engine inline*: the same with `concurrency=0` (env steps "
        "in the engine's thread). *env only*: reset + step, no prompts (for scale).",
        "- *text*: prompts are chat messages (HTTP-policy mode). *token*: every prompt goes through the chat "
        "template and a byte-level tokenizer (one token per byte, so tokenisation dominates).",
        "- Target: engine >= 0.9x the plain loop.",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
