"""Overhead of serving an environment over OpenEnv's protocol (#23): steps/s in-process vs served.

    python bench/serve_env.py [--seconds 4] [--sessions 1,16,64] [--out bench/results/serve_env.md]

(Not bench/openenv.py: run as a script, that name would shadow the openenv package.)

Both sides are driven exactly as training drives them: the rollout engine's
:class:`ThreadEnvPool` (``concurrency`` = sessions) steps N environments in batches with a
fixed cycle of replies, and each finished episode's environment is released and a new one
made (a new WebSocket session per episode when served, as in a rollout). In-process the
pool makes ``turngym.make(ENV)``; served it makes ``turngym.make("openenv:URL")`` against a
``turngym serve-env ENV`` subprocess on 127.0.0.1 (server and client do not share a GIL, and
both run on this machine's cores). Rates are environment steps per second of wall time over
``--seconds`` after one warm-up batch; the load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from turngym.agents.env_pool import ResetRequest, StepRequest, ThreadEnvPool

#: The replies each environment is stepped with, in a cycle (the same both ways).
REPLIES = {
    "turngym/Sokoban-v0": ["<action>left</action>", "<action>up</action>", "<action>right</action>",
                           "<action>down</action>"],
    "turngym/Search-v0": ['<tool_call>{"name": "search", "arguments": {"query": "director of the film"}}</tool_call>',
                          '<tool_call>{"name": "open", "arguments": {"doc_id": "00000001"}}</tool_call>',
                          "<answer>unknown</answer>"],
}


def start_server(env_id: str, max_sessions: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "turngym", "serve-env", env_id, "--port", "0",
                             "--max-sessions", str(max_sessions)], stdout=subprocess.PIPE, text=True)
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(120)
    if not box or " at " not in box[0]:
        proc.kill()
        raise SystemExit(f"serve-env {env_id} did not start")
    return proc, box[0].split(" at ")[1].split()[0]


def steps_per_s(make_env, replies: list[str], tasks: list[str], sessions: int, seconds: float) -> float:
    """Steps/s of ``sessions`` environments stepped in batches by a ThreadEnvPool."""
    pool = ThreadEnvPool(make_env, concurrency=sessions, step_timeout_s=120, reset_timeout_s=120)
    turn = dict.fromkeys(range(sessions), 0)
    episodes = 0

    def reset(slots: list[int]) -> None:
        nonlocal episodes
        requests = [ResetRequest(s, tasks[(episodes + i) % len(tasks)], seed=episodes + i) for i, s in enumerate(slots)]
        episodes += len(slots)
        for result in pool.reset(requests):
            if result.error:
                raise RuntimeError(result.error)
            turn[result.slot] = 0

    def batch() -> int:
        results = pool.step([StepRequest(s, replies[turn[s] % len(replies)]) for s in turn])
        done = []
        for result in results:
            if result.error:
                raise RuntimeError(result.error)
            turn[result.slot] += 1
            if result.terminated or result.truncated:
                done.append(result.slot)
        if done:
            pool.release(done)
            reset(done)
        return len(results)

    try:
        reset(list(turn))
        batch()  # warm-up: connections, first searches
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            steps += batch()
        return steps / (time.perf_counter() - t0)
    finally:
        pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured time per configuration")
    parser.add_argument("--sessions", default="1,16,64", help="concurrent sessions to measure")
    parser.add_argument("--envs", default=",".join(REPLIES), help="environments to measure")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (markdown)")
    args = parser.parse_args()
    import turngym

    counts = [int(n) for n in args.sessions.split(",")]
    rows = [f"load average before: {os.getloadavg()[0]:.1f} (1 min), {os.cpu_count()} CPUs", "",
            "| env | sessions | in-process steps/s | served steps/s | served / in-process | added wall time per step |",
            "|---|---|---|---|---|---|"]
    for env_id in args.envs.split(","):
        tasks = [t.id for t in turngym.make(env_id).unwrapped.suite.split("train")]
        proc, url = start_server(env_id, max(counts) * 2)
        try:
            for n in counts:
                local = steps_per_s(lambda: turngym.make(env_id), REPLIES[env_id], tasks, n, args.seconds)
                served = steps_per_s(lambda: turngym.make(f"openenv:{url}"), REPLIES[env_id], tasks, n, args.seconds)
                added_us = 1e6 / served - 1e6 / local  # per step of the whole batch loop
                rows.append(f"| {env_id} | {n} | {local:,.0f} | {served:,.0f} | {served / local:.3f} | {added_us:,.0f} µs |")
                print(rows[-1], flush=True)
        finally:
            proc.terminate()
            proc.wait(60)
    rows += ["", f"load average after: {os.getloadavg()[0]:.1f} (1 min)"]
    text = "\n".join(rows)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
