"""HF backend generation speed: generated tokens/s at batch 1, 8 and 32.

Side by side in one run, for each model and batch size:

- ``HFPolicy.generate`` (our loop: per-prompt seeded sampling, logprobs, stop handling), and
- the baseline: transformers' own ``model.generate(do_sample=True)`` on the same left-padded
  batch (no logprobs, one global RNG),

both forced to produce exactly ``--new-tokens`` tokens per row (EOS ignored), best of
``--repeats``. Reports tokens/s and the ratio ours / baseline.

Then, for each model (#21):

- **Multi-turn with vs without KV reuse**: ``--episodes`` episodes of ``--turns`` turns; each
  turn's prompt is the last prompt + the sampled ids + a new observation message (token-in/
  token-out), generated with KV reuse; the last turn's prompts are then generated again by a
  policy with ``reuse_kv=False`` (what every turn cost before). Reports the last turn's time
  both ways, the ratio, and the largest logprob difference between the two.
- **Decode at batch 32 vs the matmul limit**: decode time = generate(1 + N tokens) minus
  generate(1 token) at batch 32; model FLOP/s = 2 x (parameters the forward multiplies by: all
  but the input embedding, plus the LM head) per token; the limit = the best fp32 GFLOP/s of a
  square ``torch.mm`` at the same thread count. Reports the fraction.
- **Greedy episodes with vs without drafts**: ``--greedy-episodes`` test tasks of
  ``--greedy-env`` run greedily (what ``turngym eval`` does) with prompt-lookup drafts and with
  one token per forward; reports both times, the ratio, and whether the token ids are equal.

    python bench/generation.py                       # tiny and smollm2, batches 1 8 32
    python bench/generation.py --models tiny --batches 1 8 --out /tmp/gen.md
    python bench/generation.py --models smollm2 --threads 1 --only multiturn decode
    python bench/generation.py --models smollm2 --only greedy
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from turngym.agents.hf import HFPolicy
from turngym.agents.models import load_model
from turngym.agents.policy import SamplingParams

TASKS = [
    "Push the box onto the goal. The board is:\n#####\n#@$.#\n#####",
    "What is 17 times 23?",
    "Find the file that defines the parser and report its line count.",
    "Move left twice, then up.",
]


def prompts_for(tokenizer, batch: int) -> list[list[int]]:
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": TASKS[i % len(TASKS)] + f" (episode {i})"}],
            add_generation_prompt=True,
            return_dict=False,
        )
        for i in range(batch)
    ]


def time_ours(policy: HFPolicy, prompts, new_tokens: int) -> float:
    sampling = SamplingParams(temperature=1.0, max_tokens=new_tokens, seeds=list(range(len(prompts))))
    start = time.perf_counter()
    completions = policy.generate(prompts, sampling)
    elapsed = time.perf_counter() - start
    assert all(len(c.token_ids) == new_tokens for c in completions)
    return elapsed


def time_baseline(policy: HFPolicy, prompts, new_tokens: int) -> float:
    model = policy.model
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), policy.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = torch.tensor(p)
        mask[row, width - len(p):] = 1
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=policy.pad_token_id,
        )
    elapsed = time.perf_counter() - start
    assert out.shape[1] - width == new_tokens
    return elapsed


OBSERVATION = "The board is now:\n#######\n#  .  #\n# $@$ #\n#  .  #\n#######\nYou pushed a box. {turn} moves so far."


def observation_ids(tokenizer, turn: int, episode: int) -> list[int]:
    """A new user message (a Sokoban-like board) as token ids, ending in the generation prompt."""
    text = OBSERVATION.format(turn=turn) + f" (episode {episode})"
    return list(tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                              add_generation_prompt=True, return_dict=False))


def multi_turn(spec: str, model, tokenizer, episodes: int, turns: int, new_tokens: int) -> dict:
    """The last turn of token-in/token-out episodes, with KV reuse vs a fresh prefill."""
    reuse = HFPolicy(model, tokenizer, max_batch_size=episodes)
    fresh = HFPolicy(model, tokenizer, max_batch_size=episodes, reuse_kv=False)
    for policy in (reuse, fresh):
        policy.eos_token_ids = frozenset()  # every reply new_tokens long: both sides do the same work
    newline = tokenizer.encode("\n", add_special_tokens=False)
    prompts = prompts_for(tokenizer, episodes)
    times = []
    for turn in range(turns):
        sampling = SamplingParams(temperature=1.0, max_tokens=new_tokens, seeds=[1000 * turn + i for i in range(episodes)])
        start = time.perf_counter()
        got = reuse.generate(prompts, sampling)
        times.append(time.perf_counter() - start)
        if turn < turns - 1:
            prompts = [p + c.token_ids + newline + observation_ids(tokenizer, turn, i)
                       for i, (p, c) in enumerate(zip(prompts, got))]
    start = time.perf_counter()
    want = fresh.generate(prompts, sampling)
    fresh_s = time.perf_counter() - start
    same = [a.token_ids == b.token_ids for a, b in zip(got, want)]
    dlogp = max(abs(x - y) for a, b in zip(got, want) for x, y in zip(a.logprobs, b.logprobs))
    result = {"spec": spec, "episodes": episodes, "turns": turns, "prompt_tokens": sum(map(len, prompts)) / episodes,
              "reuse_s": times[-1], "fresh_s": fresh_s, "all_turns_s": sum(times),
              "same_ids": all(same), "max_dlogp": dlogp, "load": os.getloadavg()[0]}
    print(f"{spec:8s} turn {turns}, {episodes} episodes, {result['prompt_tokens']:.0f} prompt tokens each: "
          f"KV reuse {times[-1]:.2f} s, fresh prefill {fresh_s:.2f} s, {fresh_s / times[-1]:.2f}x; "
          f"ids equal {all(same)}, max |dlogp| {dlogp:.2e} (load {result['load']:.2f})", flush=True)
    return result


def matmul_limit(size: int = 1024, repeats: int = 5) -> float:
    """Best fp32 FLOP/s of a square torch.mm at the current thread count."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * size**3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def forward_params(model) -> int:
    """Parameters one decode step multiplies by: all but the input embedding (a lookup), plus
    the LM head (the embedding matrix again when tied)."""
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    total = sum(p.numel() for p in model.parameters())
    return total - embed.numel() + (head.numel() if head is embed else 0)


def decode_fraction(spec: str, model, tokenizer, batch: int, new_tokens: int, repeats: int) -> dict:
    """Decode FLOP/s at ``batch`` as a fraction of the measured matmul limit. Decode time: from
    the end of the prefill forward to the end of ``generate`` (sampling included), best of
    ``repeats``."""
    policy = HFPolicy(model, tokenizer, max_batch_size=batch, reuse_kv=False)
    policy.eos_token_ids = frozenset()
    prompts = prompts_for(tokenizer, batch)
    ends: list[float] = []
    hook = model.register_forward_hook(lambda *_: ends.append(time.perf_counter()))
    try:
        times = []
        for _ in range(repeats):
            ends.clear()
            time_ours(policy, prompts, 1 + new_tokens)
            times.append(time.perf_counter() - ends[0])
    finally:
        hook.remove()
    decode_s = min(times)
    flops = 2 * forward_params(model) * batch * new_tokens / decode_s
    limit = matmul_limit()
    result = {"spec": spec, "batch": batch, "decode_tok_s": batch * new_tokens / decode_s, "gflops": flops / 1e9,
              "limit_gflops": limit / 1e9, "fraction": flops / limit, "load": os.getloadavg()[0]}
    print(f"{spec:8s} decode at batch {batch}: {result['decode_tok_s']:.1f} tok/s, {flops / 1e9:.1f} GFLOP/s "
          f"of a measured {limit / 1e9:.1f} GFLOP/s matmul limit = {flops / limit:.0%} (load {result['load']:.2f})",
          flush=True)
    return result


def greedy_episodes(spec: str, model, tokenizer, env_id: str, episodes: int, turns: int) -> dict:
    """What ``turngym eval --env ENV --policy SPEC --episodes N`` generates (greedy, up to 256
    tokens a reply, full history), with prompt-lookup drafts and without, alternating; the
    trajectories' token ids must be equal."""
    from turngym.agents.evaluation.runner import split_tasks
    from turngym.agents.rollout import EpisodeSpec, RolloutConfig, RolloutEngine

    tasks = split_tasks(env_id, "test")[1][:episodes]
    config = RolloutConfig(temperature=0.0, max_tokens=256, group_size=1, progress=False)
    results = {}
    for budget in (64, 0):
        policy = HFPolicy(model, tokenizer, draft_budget=budget)
        engine = RolloutEngine(policy, env_id, tokenizer, config, env_kwargs={"max_turns": turns})
        start = time.perf_counter()
        trajectories = engine.run_episodes([EpisodeSpec(task=t, seed=i, group_id=t) for i, t in enumerate(tasks)])
        results[budget] = (time.perf_counter() - start, [[turn.response_ids for turn in tr.turns] for tr in trajectories])
    (drafts_s, with_ids), (plain_s, plain_ids) = results[64], results[0]
    result = {"spec": spec, "env": env_id, "episodes": len(tasks), "turns": turns, "drafts_s": drafts_s,
              "plain_s": plain_s, "same_ids": with_ids == plain_ids,
              "reply_tokens": sum(len(r) for tr in with_ids for r in tr), "load": os.getloadavg()[0]}
    print(f"{spec:8s} {env_id} {len(tasks)} greedy episodes of <= {turns} turns: drafts {drafts_s:.1f} s, "
          f"one token per forward {plain_s:.1f} s, {plain_s / drafts_s:.2f}x; ids equal {result['same_ids']} "
          f"(load {result['load']:.2f})", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "smollm2"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--episodes", type=int, default=8, help="episodes in the multi-turn comparison")
    parser.add_argument("--turns", type=int, default=8, help="the turn whose generation is compared")
    parser.add_argument("--decode-batch", type=int, default=32)
    parser.add_argument("--only", nargs="+", choices=["batches", "multiturn", "decode", "greedy"],
                        default=["batches", "multiturn", "decode", "greedy"])
    parser.add_argument("--greedy-env", default="turngym/Sokoban-v0")
    parser.add_argument("--greedy-episodes", type=int, default=2)
    parser.add_argument("--greedy-turns", type=int, default=10, help="turns per greedy episode (the env's own limit is 30)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "generation.md"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    load_before = os.getloadavg()[0]
    rows, turns, decodes, greedy = [], [], [], []
    for spec in args.models:
        model, tokenizer = load_model(spec)
        if "multiturn" in args.only:
            turns.append(multi_turn(spec, model, tokenizer, args.episodes, args.turns, args.new_tokens))
        if "decode" in args.only:
            decodes.append(decode_fraction(spec, model, tokenizer, args.decode_batch, args.new_tokens, args.repeats))
        if "greedy" in args.only:
            greedy.append(greedy_episodes(spec, model, tokenizer, args.greedy_env, args.greedy_episodes,
                                          args.greedy_turns))
        if "batches" not in args.only:
            continue
        policy = HFPolicy(model, tokenizer, max_batch_size=max(args.batches))
        policy.eos_token_ids = frozenset()  # fixed-length runs, so both sides make the same tokens
        params = sum(p.numel() for p in model.parameters())
        time_ours(policy, prompts_for(tokenizer, 1), 4)  # warm-up
        for batch in args.batches:
            prompts = prompts_for(tokenizer, batch)
            ours = min(time_ours(policy, prompts, args.new_tokens) for _ in range(args.repeats))
            base = min(time_baseline(policy, prompts, args.new_tokens) for _ in range(args.repeats))
            tokens = batch * args.new_tokens
            rows.append((spec, params, batch, tokens / ours, tokens / base, base / ours))
            print(f"{spec:8s} batch {batch:3d}: ours {tokens / ours:9.1f} tok/s   "
                  f"transformers generate {tokens / base:9.1f} tok/s   ratio {base / ours:.2f}x", flush=True)

    lines = [
        "# HF backend generation speed",
        "",
        f"`python bench/generation.py` — {args.new_tokens} new tokens per row, EOS ignored, best of "
        f"{args.repeats}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, CPU float32.",
        "Baseline: transformers `model.generate(do_sample=True)` on the same left-padded batch, same run.",
        f"{os.cpu_count()} CPUs; 1-minute load average {load_before:.1f} at the start and "
        f"{os.getloadavg()[0]:.1f} at the end (other work on the machine slows both sides).",
    ]
    if rows:
        lines += ["", "| model | params | batch | HFPolicy tok/s | transformers generate tok/s | ratio (ours / baseline) |",
                  "|---|---:|---:|---:|---:|---:|"]
    for spec, params, batch, ours, base, ratio in rows:
        lines.append(f"| {spec} | {params / 1e6:.2f}M | {batch} | {ours:.1f} | {base:.1f} | {ratio:.2f}x |")
    if turns:
        lines += [
            "",
            f"## Multi-turn: turn {args.turns} with vs without KV reuse",
            "",
            f"{args.new_tokens} tokens per reply, token-in/token-out prompts (last prompt + sampled ids + a "
            "board observation); the last turn generated with the held caches, then again by a "
            "`reuse_kv=False` policy.",
            "",
            "| model | episodes | prompt tokens | KV reuse s | fresh prefill s | ratio | ids equal | max abs dlogp | "
            "all turns with reuse s | load |",
            "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
        ]
        lines += [f"| {r['spec']} | {r['episodes']} | {r['prompt_tokens']:.0f} | {r['reuse_s']:.2f} | "
                  f"{r['fresh_s']:.2f} | {r['fresh_s'] / r['reuse_s']:.2f}x | {r['same_ids']} | "
                  f"{r['max_dlogp']:.1e} | {r['all_turns_s']:.2f} | {r['load']:.2f} |" for r in turns]
    if decodes:
        lines += [
            "",
            f"## Decode at batch {args.decode_batch} vs the fp32 matmul limit",
            "",
            "| model | decode tok/s | model GFLOP/s | matmul limit GFLOP/s | fraction | load |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        lines += [f"| {r['spec']} | {r['decode_tok_s']:.1f} | {r['gflops']:.1f} | {r['limit_gflops']:.1f} | "
                  f"{r['fraction']:.0%} | {r['load']:.2f} |" for r in decodes]
    if greedy:
        lines += [
            "",
            "## Greedy episodes with vs without prompt-lookup drafts",
            "",
            "What `turngym eval` runs: greedy, <= 256 tokens a reply, full history; the same episodes "
            "with `draft_budget=64` (the default) and `0` (one token per forward), alternating.",
            "",
            "| model | env | episodes x turns | reply tokens | drafts s | one token per forward s | ratio | ids equal | load |",
            "|---|---|---|---:|---:|---:|---:|---|---:|",
        ]
        lines += [f"| {r['spec']} | {r['env']} | {r['episodes']} x {r['turns']} | {r['reply_tokens']} | "
                  f"{r['drafts_s']:.1f} | {r['plain_s']:.1f} | {r['plain_s'] / r['drafts_s']:.2f}x | "
                  f"{r['same_ids']} | {r['load']:.2f} |" for r in greedy]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
