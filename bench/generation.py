"""HF backend generation speed: generated tokens/s at batch 1, 8 and 32.

Side by side in one run, for each model and batch size:

- ``HFPolicy.generate`` (our loop: per-prompt seeded sampling, logprobs, stop handling), and
- the baseline: transformers' own ``model.generate(do_sample=True)`` on the same left-padded
  batch (no logprobs, one global RNG),

both forced to produce exactly ``--new-tokens`` tokens per row (EOS ignored), best of
``--repeats``. Reports tokens/s and the ratio ours / baseline.

    python bench/generation.py                       # tiny and smollm2, batches 1 8 32
    python bench/generation.py --models tiny --batches 1 8 --out /tmp/gen.md
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "smollm2"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "generation.md"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    load_before = os.getloadavg()[0]
    rows = []
    for spec in args.models:
        model, tokenizer = load_model(spec)
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
        "",
        "| model | params | batch | HFPolicy tok/s | transformers generate tok/s | ratio (ours / baseline) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for spec, params, batch, ours, base, ratio in rows:
        lines.append(f"| {spec} | {params / 1e6:.2f}M | {batch} | {ours:.1f} | {base:.1f} | {ratio:.2f}x |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
