"""cuDNN attention allowed vs ``planless_attention``, side by side in one run on a CUDA device.

Two measurements, each alternating the two settings in the same process:

- ``HFPolicy.generate`` in bf16 (64 new tokens per row, sampled, EOS ignored) at batch 1, 32
  and 256: ms per decode step, and how many rows sampled the same ids (bf16 kernels round
  differently, so sampled rows drift apart after the first differing token).
- A training-shaped forward + backward (fp32 weights, bf16 autocast, 8 rows with a padding
  mask) over 8 widths the process has not seen yet, then the same 8 again: ms per micro-batch.

    python3 bench/gpu_cudnn_ab.py [--device cuda] [--model SPEC] [--new-tokens 64]

Run on the H200 beside ``scripts/gpu-check.sh`` (it needs the same carried wheels); the result
is in bench/results/gpu/cudnn-ab.txt and bench/RESULTS.md ("The device check"). On a CPU both
settings are the same code (the switch only touches CUDA's backends): a dry run.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu  # noqa: E402  (bench/gpu.py: the device check's helpers)

gpu.ensure_turngym_importable()

import torch  # noqa: E402

from turngym.agents import hf  # noqa: E402
from turngym.agents.kv_cache import planless_attention  # noqa: E402
from turngym.agents.models import load_model  # noqa: E402
from turngym.agents.policy import SamplingParams  # noqa: E402


@contextlib.contextmanager
def cudnn_allowed(device: torch.device) -> Iterator[None]:
    """The baseline: torch picks its attention backend as it would by default."""
    yield


def timed(device: torch.device, run: Callable[[], object]) -> tuple[float, object]:
    gpu.sync(device)
    start = time.perf_counter()
    result = run()
    gpu.sync(device)
    return time.perf_counter() - start, result


def decode(device: torch.device, spec: str, new_tokens: int) -> None:
    model, tokenizer = load_model(spec)
    policy = hf.HFPolicy(model.to(device=device, dtype=torch.bfloat16), tokenizer, max_batch_size=256)
    policy.eos_token_ids = frozenset()  # every row makes exactly new_tokens tokens
    policy.generate(gpu.grid_prompts(tokenizer, 1), SamplingParams(temperature=1.0, max_tokens=2, seeds=[0]))
    settings = {"cudnn-allowed": cudnn_allowed, "planless": planless_attention}
    for batch in (1, 32, 256):
        prompts = gpu.grid_prompts(tokenizer, batch)
        sampling = SamplingParams(temperature=1.0, max_tokens=new_tokens, seeds=list(range(batch)))
        seen: dict[str, list[tuple[float, list[list[int]]]]] = {name: [] for name in settings}
        for _ in range(2):  # the first pass meets every shape for the first time, the second again
            for name, switch in settings.items():
                hf.planless_attention = switch  # what HFPolicy.generate enters
                seconds, out = timed(device, lambda: policy.generate(prompts, sampling))
                seen[name].append((seconds, [c.token_ids for c in out]))
        hf.planless_attention = planless_attention
        (base, base_ids), (new, new_ids) = seen["cudnn-allowed"][-1], seen["planless"][-1]
        same = sum(a == b for a, b in zip(base_ids, new_ids))
        print(f"decode batch {batch}: cudnn-allowed {base / new_tokens * 1e3:.1f} ms/step, planless "
              f"{new / new_tokens * 1e3:.1f} ms/step, ratio {base / new:.2f}x; rows with identical ids "
              f"{same}/{batch}; first passes {seen['cudnn-allowed'][0][0]:.2f}s / {seen['planless'][0][0]:.2f}s",
              flush=True)


def train_shapes(device: torch.device, spec: str) -> None:
    model = load_model(spec)[0].to(device).train()

    def step(width: int) -> None:
        ids = torch.randint(0, 200, (8, width), device=device)
        mask = torch.ones_like(ids)
        mask[::2, -7:] = 0  # right padding on half the rows
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(input_ids=ids, attention_mask=mask).logits.float().logsumexp(-1).mean()
        loss.backward()

    # new widths for each setting, so both meet unseen shapes on their first pass
    for offset, (name, switch) in enumerate((("cudnn-allowed", cudnn_allowed), ("planless", planless_attention))):
        widths = [200 + 13 * k + offset for k in range(8)]
        with switch(device):
            for rep in range(2):
                seconds, _ = timed(device, lambda: [step(w) for w in widths])
                print(f"train fwd+bwd, 8 widths, {name}, pass {rep} ({'new' if rep == 0 else 'seen'} shapes): "
                      f"{seconds / len(widths) * 1e3:.1f} ms/micro-batch", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default=gpu.SIZES["full"]["model"])
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    device = torch.device(args.device)
    decode(device, args.model, args.new_tokens)
    train_shapes(device, args.model)


if __name__ == "__main__":
    main()
