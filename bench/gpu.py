"""The device check: generation and training speed, memory and the bf16 logprob gap, in one command.

Run on a GPU machine through ``scripts/gpu-check.sh``, which first installs the carried wheels
of the dependencies the machine lacks (docs/scaling.md, "The device check"):

    bash scripts/gpu-check.sh                                  # CUDA, a ~200M-parameter model, <= 8 minutes
    python3 bench/gpu.py --device cpu --tiny --out /tmp/gpu    # the CI dry run, well under a minute

Phases, each time-boxed and each recorded on its own (a phase that fails is written down with
its error and the others still run):

1. ``matmul_peak``: the device's dense matmul rate (bf16 on CUDA), measured in this run, so
   every throughput below is also given as a fraction of it.
2. ``generation``: ``HFPolicy.generate`` in bf16 at batch 1, 32 and 256, a fixed number of new
   tokens per row (EOS ignored): tokens/s and model TFLOP/s (2 x params per token).
3. ``logprob_gap``: replies sampled by a bf16 copy of the model against the training forward
   of the fp32 model, plain and under bf16 autocast (what ``optim.mixed_precision=bf16`` does),
   and fp32 against fp32 as the floor.
4. ``train_full`` / ``train_lora``: the real :class:`~turngym.trainers.trainer.Trainer` on
   FrozenLake (``examples/main.yaml``'s settings): the supervised warm start (fp32), then GiGPO steps
   until the phase's time is up, with ``optim.mixed_precision=bf16`` (fp32 weights, bf16
   autocast for the rollouts and the update alike); rollout and update tokens/s, the trainer's
   own rollout/train gap, held-out success at the end. LoRA off, then on.

The model is built from a config (no weights travel): ``tiny-markov`` at hidden 1024, 12
layers (~200M parameters). Writes ``gpu.json`` and ``gpu.md`` under ``--out`` (default ``$OUT``
when set, else ``bench/results/gpu``). A watchdog writes what was measured and exits if the
whole run outlives ``--budget`` by 40 s.
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.util
import json
import math
import os
import platform
import resource
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FOLDERS = ("envs", "agents", "trainers", "tools", "sandboxes")


def ensure_turngym_importable() -> None:
    """Make ``import turngym.*`` work from a bare checkout (the device machine has no install).

    setup.py maps the top-level folders into the ``turngym`` namespace; a folder of symlinks
    reproduces that mapping without building or installing anything."""
    spec = importlib.util.find_spec("turngym")
    if spec is not None and any((Path(p) / "trainers").is_dir() for p in spec.submodule_search_locations or []):
        return
    farm = Path(tempfile.mkdtemp(prefix="turngym-src-")) / "turngym"
    farm.mkdir()
    for entry in (ROOT / "turngym").iterdir():
        (farm / entry.name).symlink_to(entry)
    for folder in PACKAGE_FOLDERS:
        (farm / folder).symlink_to(ROOT / folder)
    sys.path.insert(0, str(farm.parent))


#: What each size runs. ``full`` fits the device tool's 8-minute target with a margin;
#: ``tiny`` is the CPU dry run CI executes (same code paths, toy numbers).
SIZES: dict[str, dict[str, Any]] = {
    "full": dict(model="tiny-markov:hidden=1024,layers=12,heads=16,seed=0", matmul_n=8192,
                 gen_batches=[1, 32, 256], gen_tokens=64, gap_rows=64,
                 phase_s={"matmul_peak": 20, "generation": 80, "logprob_gap": 25, "train_full": 150, "train_lora": 110},
                 max_steps=1000, sft_steps=80, sft_episodes=300, tasks_per_step=16, group_size=8, eval_tasks=24,
                 sft_lr=3e-4, rl_lr=1e-5, lora_lr=1e-4),
    "tiny": dict(model="tiny-markov:hidden=32,layers=1,heads=2,seed=0", matmul_n=128,
                 gen_batches=[1, 32, 256], gen_tokens=4, gap_rows=4,
                 # generous: the dry run is bounded by its step counts; these limits only catch a
                 # hang on a loaded CI machine (an idle 2-core one takes ~15 s in all)
                 phase_s={"matmul_peak": 2, "generation": 20, "logprob_gap": 10, "train_full": 45, "train_lora": 45},
                 max_steps=2, sft_steps=20, sft_episodes=8, tasks_per_step=2, group_size=4, eval_tasks=2,
                 sft_lr=1e-2, rl_lr=3e-4, lora_lr=3e-4,
                 # a toy model's rollouts all fail alike (zero advantage, no update to time): a
                 # penalty for invalid replies makes its half-learned groups differ
                 env_kwargs={"invalid_penalty": 0.1}),
}

#: Seconds for all phases together, unless --budget says otherwise.
BUDGET_S = {"full": 400.0, "tiny": 120.0}

GRID_PROMPTS = ["SFFF\nFHFH\nFFFH\nHFFG", "SFFF\nFFFF\nFHFF\nFFFG", "SFHF\nFFFF\nHFFF\nFFHG"]


# ---------------------------------------------------------------------------------------------
# Phases
# ---------------------------------------------------------------------------------------------


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(ctx: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Best-of-repeats dense matmul rate: bf16 on CUDA (what the tensor cores give a bf16
    model), fp32 on CPU (bf16 matmuls there are emulated and say nothing about the limit)."""
    import torch

    device, n = ctx["device"], ctx["size"]["matmul_n"]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up: cuBLAS picks its kernel on the first call
    sync(device)
    deadline, best, iters = time.perf_counter() + seconds / 2, math.inf, 10
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(iters):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - start) / iters)
    tflops = 2 * n**3 / best / 1e12
    ctx["peak_tflops"] = tflops
    return {"dtype": str(dtype).removeprefix("torch."), "n": n, "tflops": tflops}


def grid_prompts(tokenizer: Any, batch: int) -> list[list[int]]:
    return [tokenizer.apply_chat_template([{"role": "user", "content": GRID_PROMPTS[i % 3] + f"\n(episode {i})"}],
                                          add_generation_prompt=True, return_dict=False) for i in range(batch)]


def generation(ctx: dict[str, Any], seconds: float) -> dict[str, Any]:
    """HFPolicy tokens/s at each batch size on a bf16 copy of the model; a batch that would not
    start before the phase's deadline is recorded as skipped."""
    import torch

    from turngym.agents.hf import HFPolicy
    from turngym.agents.models import load_model
    from turngym.agents.policy import SamplingParams

    size, device = ctx["size"], ctx["device"]
    model, tokenizer = load_model(size["model"])
    params = sum(p.numel() for p in model.parameters())
    policy = HFPolicy(model.to(device=device, dtype=torch.bfloat16), tokenizer, max_batch_size=max(size["gen_batches"]))
    policy.eos_token_ids = frozenset()  # fixed-length rows: every batch makes the same number of tokens
    new = size["gen_tokens"]
    policy.generate(grid_prompts(tokenizer, 1), SamplingParams(temperature=1.0, max_tokens=2, seeds=[0]))  # warm-up
    deadline, rows = time.perf_counter() + seconds, []
    for batch in size["gen_batches"]:
        if time.perf_counter() > deadline:
            rows.append({"batch": batch, "status": "skipped: phase time used up"})
            continue
        prompts = grid_prompts(tokenizer, batch)
        start = time.perf_counter()
        out = policy.generate(prompts, SamplingParams(temperature=1.0, max_tokens=new, seeds=list(range(batch))))
        sync(device)
        elapsed = time.perf_counter() - start
        tokens = sum(len(c.token_ids) for c in out)
        rows.append({"batch": batch, "status": "ok", "seconds": elapsed, "tokens": tokens,
                     "tokens_per_s": tokens / elapsed, **rate(2 * params * tokens / elapsed, ctx)})
    return {"dtype": "bfloat16", "params": params, "new_tokens": new, "batches": rows}


def rate(flops_per_s: float, ctx: dict[str, Any]) -> dict[str, float | None]:
    """Model TFLOP/s and its fraction of this run's measured matmul peak (None if unmeasured)."""
    peak = ctx.get("peak_tflops")
    tflops = flops_per_s / 1e12
    return {"tflops": tflops, "fraction_of_peak": tflops / peak if peak else None}


def logprob_gap(ctx: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The behaviour-policy logprobs the rollout engine reports, against the training forward.

    bf16 weights sample; the fp32 model scores the same tokens plain and under bf16 autocast.
    The fp32-vs-fp32 pair is the floor (only KV-cache and padding noise)."""
    import torch

    from turngym.agents.hf import HFPolicy
    from turngym.agents.models import load_model
    from turngym.agents.policy import SamplingParams
    from turngym.trainers.losses import logprob_mismatch
    from turngym.trainers.rows import Row, collate, token_logprobs

    size, device = ctx["size"], ctx["device"]
    model, tokenizer = load_model(size["model"])
    model.to(device)
    prompts = grid_prompts(tokenizer, size["gap_rows"])
    sampling = SamplingParams(temperature=1.0, max_tokens=max(size["gen_tokens"], 8), seeds=list(range(len(prompts))))
    bf16 = HFPolicy(copy.deepcopy(model).to(torch.bfloat16), tokenizer, max_batch_size=len(prompts))
    fp32 = HFPolicy(model, tokenizer, max_batch_size=len(prompts))
    pad = tokenizer.pad_token_id
    result: dict[str, Any] = {}
    for gen_name, policy in (("bf16", bf16), ("fp32", fp32)):
        completions = policy.generate(prompts, sampling)
        rows = [Row(p, c.token_ids, rollout_logprobs=c.logprobs) for p, c in zip(prompts, completions)]
        batch = collate(rows, pad, device)
        for train_name, autocast in (("fp32", False), ("bf16_autocast", True)):
            if gen_name == "fp32" and autocast:
                continue
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                train_logp, _ = token_logprobs(model, batch)
            result[f"{gen_name}_rollout_vs_{train_name}_train"] = logprob_mismatch(
                batch["rollout_logp"], train_logp.float(), batch["response_mask"])
    return result


def train_config(ctx: dict[str, Any], lora: bool, out_dir: str) -> Any:
    """examples/main.yaml (the FrozenLake job) resized for this model and run in bf16."""
    import yaml

    from turngym.trainers.config import TrainConfig

    size = ctx["size"]
    raw = yaml.safe_load((ROOT / "examples" / "main.yaml").read_text())
    raw["policy"].update(model=size["model"], device=ctx["device"].type, lora=lora, torch_threads=None)
    raw["env"]["kwargs"].update(size.get("env_kwargs", {}))
    raw["rollout"]["group_size"] = size["group_size"]
    raw["optim"].update(lr=size["lora_lr" if lora else "rl_lr"], mixed_precision="bf16")
    raw["run"].update(steps=size["max_steps"], tasks_per_step=size["tasks_per_step"], eval_every=0,
                      eval_tasks=size["eval_tasks"], checkpoint_every=0, tensorboard=False,
                      sample_trajectories=0, out_dir=out_dir)
    raw["sft"].update(episodes=size["sft_episodes"], steps=size["sft_steps"], lr=size["sft_lr"], max_seconds=None)
    return TrainConfig.model_validate(raw)


def step_tokens(trajectories: list[Any]) -> tuple[int, int]:
    """(generated tokens, tokens of the rows the update trained on) of one step: a turn is a row
    when its advantage is not zero (the trainer drops the others, they carry no gradient)."""
    turns = [turn for t in trajectories for turn in t.turns]
    generated = sum(len(turn.response_ids) for turn in turns)
    trained = sum(len(turn.prompt_ids) + len(turn.response_ids) for turn in turns if turn.advantage)
    return generated, trained


def train(ctx: dict[str, Any], seconds: float, lora: bool) -> dict[str, Any]:
    """Warm start (a fixed number of steps, capped at a third of the phase), then RL steps of the
    real Trainer until 85% of the phase is spent (the rest is for the held-out evaluation)."""
    from turngym.trainers.trainer import Trainer

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as out_dir:
        config = train_config(ctx, lora, out_dir)
        config.sft.max_seconds = seconds / 3
        trainer = Trainer(config)
        try:
            params = sum(p.numel() for p in trainer.model.parameters())
            trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
            sft_start = time.perf_counter()
            sft = trainer.warm_start()
            result: dict[str, Any] = {"lora": lora, "params": params, "trainable_params": trainable,
                                      "sft_steps": int(sft["sft/steps"]), "sft_loss": sft["sft/loss"],
                                      "sft_seconds": time.perf_counter() - sft_start}
            # an update costs ~6 x params FLOPs per token with every weight trained; with LoRA the
            # frozen weights get no weight gradient, ~4 x params (the adapters are negligible)
            result.update(rl_steps(trainer, ctx, start + 0.85 * seconds, (4 if lora else 6) * params))
            evaluation = trainer.evaluate("gpu-check")
            result.update(held_out_success=evaluation["eval/success_rate"],
                          held_out_ci=[evaluation["eval/success_ci_low"], evaluation["eval/success_ci_high"]])
            return result
        finally:
            if trainer.logger is not None:
                trainer.logger.close()


def rl_steps(trainer: Any, ctx: dict[str, Any], deadline: float, update_flops_per_token: float) -> dict[str, Any]:
    """Trainer.train_step until the deadline (or the size's step count); sums of the time and
    tokens of rollouts and updates, and the trainer's own rollout/train logprob gap per step."""
    import numpy as np

    params = sum(p.numel() for p in trainer.model.parameters())
    steps, updates, totals, gaps, success = 0, 0, dict(rollout_s=0.0, update_s=0.0, generated=0, trained=0), [], []
    while steps < trainer.config.run.steps and time.perf_counter() < deadline:
        metrics = trainer.train_step()
        steps += 1
        updates += metrics["train/rows"] > 0
        generated, trained = step_tokens(trainer.last_trajectories)
        totals["rollout_s"] += metrics["time/rollout_s"]
        totals["update_s"] += metrics["time/step_s"] - metrics["time/rollout_s"]
        totals["generated"] += generated
        totals["trained"] += trained
        success.append(metrics["rollout/success_rate"])
        if "train/rollout_train_gap_abs_mean" in metrics:
            gaps.append({k: metrics[f"train/rollout_train_gap_{k}"] for k in ("abs_mean", "abs_max", "k3")})
    rollout_tps = totals["generated"] / totals["rollout_s"] if totals["rollout_s"] else None
    update_tps = totals["trained"] / totals["update_s"] if totals["update_s"] else None
    return {
        "rl_steps": steps, "rl_updates": updates, "rl_rollout_seconds": totals["rollout_s"], "rl_update_seconds": totals["update_s"],
        "generated_tokens": totals["generated"], "trained_tokens": totals["trained"],
        "rollout_tokens_per_s": rollout_tps, "update_tokens_per_s": update_tps,
        # the trainer generates with the trained model itself: fp32 weights whose forward
        # accelerate keeps wrapped in bf16 autocast (unwrap_model(keep_fp32_wrapper=True))
        "rollout": rate(2 * params * rollout_tps, ctx) if rollout_tps else None,
        "update": rate(update_flops_per_token * update_tps, ctx) if update_tps else None,
        "training_success_first_last": [success[0], success[-1]] if success else None,
        # train/rollout_train_gap_*: the rollout's KV-cached logprobs against the update's
        # forward, both under bf16 autocast
        "rollout_train_gap": {k: float(np.mean([g[k] for g in gaps])) if k != "abs_max" else max(g[k] for g in gaps)
                              for k in ("abs_mean", "abs_max", "k3")} if gaps else None,
    }


# ---------------------------------------------------------------------------------------------
# Running the phases, each on its own clock; the outputs
# ---------------------------------------------------------------------------------------------


def peak_memory_gib(device: Any) -> float:
    """CUDA: the most memory torch allocated since the phase began; CPU: the process's peak
    resident size so far (it only grows, so later phases show the largest)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def run_phase(name: str, fn: Callable[[dict[str, Any], float], dict[str, Any]], ctx: dict[str, Any],
              results: dict[str, Any]) -> None:
    """Run one phase with its time allotment (cut to what the whole run has left); an
    exception is recorded under ``phases`` and the run goes on with the next phase."""
    import torch

    device = ctx["device"]
    left = ctx["deadline"] - time.perf_counter()
    seconds = min(ctx["size"]["phase_s"][name], left)
    record: dict[str, Any] = {"status": "skipped: the run's budget is spent", "seconds": 0.0, "allotted_s": seconds}
    results["phases"][name] = record
    if seconds <= 1:
        return
    ctx["phase"] = name
    gc.collect()  # the previous phase's trainer holds reference cycles: free its memory first
    start = time.perf_counter()
    try:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        results[name] = fn(ctx, seconds)
        record["status"] = "ok"
    except Exception as err:  # one phase's failure (an OOM, a missing kernel) must not end the check
        record.update(status="error", error=f"{type(err).__name__}: {err}",
                      traceback=traceback.format_exc(limit=6)[-2000:])
    record["seconds"] = time.perf_counter() - start
    try:
        record["peak_memory_gib"] = peak_memory_gib(device)
    except Exception as err:  # a CUDA context a phase broke cannot report its memory either
        record["peak_memory_gib"], record["memory_error"] = None, f"{type(err).__name__}: {err}"
    print(f"[gpu-check] {name}: {record['status']} in {record['seconds']:.1f}s", flush=True)


PHASES: list[tuple[str, Callable[[dict[str, Any], float], dict[str, Any]]]] = [
    ("matmul_peak", matmul_peak),
    ("generation", generation),
    ("logprob_gap", logprob_gap),
    ("train_full", lambda ctx, s: train(ctx, s, lora=False)),
    ("train_lora", lambda ctx, s: train(ctx, s, lora=True)),
]


def environment(device: Any) -> dict[str, Any]:
    import torch
    import transformers

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "transformers": transformers.__version__, "cpus": os.cpu_count(),
                            "machine": platform.machine()}
    try:
        import peft

        info["peft"] = peft.__version__
    except ImportError:
        info["peft"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=props.total_memory / 2**30,
                    capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda)
    return info


def _num(value: Any, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def _params(n: int) -> str:
    return f"{n / 1e6:.0f}M" if n >= 1e7 else f"{n / 1e6:.2f}M"


def md_header(results: dict[str, Any]) -> list[str]:
    env, peak = results["environment"], results.get("matmul_peak") or {}
    lines = [f"# Device check ({results['size']}, {results['device']})", "",
             f"{env.get('gpu', env['machine'])}; torch {env['torch']}, transformers {env['transformers']}; "
             f"model `{results['model']}`; {results['total_s']:.0f} s of a {results['budget_s']:.0f} s budget.",
             f"Matmul peak measured here: {_num(peak.get('tflops'))} TFLOP/s ({peak.get('dtype', '-')}, n={peak.get('n', '-')}).",
             "", "| phase | status | seconds | peak memory GiB |", "|---|---|---:|---:|"]
    for name, rec in results["phases"].items():
        lines.append(f"| {name} | {rec['status']} | {rec['seconds']:.1f} | {_num(rec.get('peak_memory_gib'), '{:.2f}')} |")
    return lines


def md_generation(results: dict[str, Any]) -> list[str]:
    gen = results.get("generation")
    if not gen:
        return []
    lines = [f"HFPolicy generation, {gen['dtype']}, {_params(gen['params'])} parameters, "
             f"{gen['new_tokens']} new tokens per row:", "",
             "| batch | tokens/s | model TFLOP/s | of peak |", "|---:|---:|---:|---:|"]
    for row in gen["batches"]:
        lines.append(f"| {row['batch']} | {_num(row.get('tokens_per_s'))} | {_num(row.get('tflops'), '{:.3f}')} | "
                     f"{_num(row.get('fraction_of_peak'), '{:.2%}')} |")
    return lines


def md_gap(results: dict[str, Any]) -> list[str]:
    gaps = results.get("logprob_gap")
    if not gaps:
        return []
    return ["Rollout vs training logprobs (|diff| mean / max, k3):", ""] + [
        f"- {key}: {gap['abs_mean']:.2e} / {gap['abs_max']:.2e}, k3 {gap['k3']:.2e}" for key, gap in gaps.items()]


def md_training(results: dict[str, Any]) -> list[str]:
    runs = [(name, results[name]) for name in ("train_full", "train_lora") if results.get(name)]
    if not runs:
        return []
    lines = ["| training | steps (warm start + RL) | rollout tok/s | update tok/s | update of peak | "
             "trainer gap mean / max | held-out success |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, run in runs:
        gap, update = run.get("rollout_train_gap") or {}, run.get("update") or {}
        lines.append(f"| {name} ({_params(run['trainable_params'])} of {_params(run['params'])} trained) | "
                     f"{run['sft_steps']} + {run['rl_steps']} | {_num(run['rollout_tokens_per_s'])} | "
                     f"{_num(run['update_tokens_per_s'])} | {_num(update.get('fraction_of_peak'), '{:.2%}')} | "
                     f"{_num(gap.get('abs_mean'), '{:.1e}')} / {_num(gap.get('abs_max'), '{:.1e}')} | "
                     f"{_num(run.get('held_out_success'), '{:.1%}')} |")
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The JSON's numbers as a few short tables. A section whose data is not of the expected
    shape (a phase that failed half-way) is named instead of breaking the others."""
    lines: list[str] = []
    for section in (md_header, md_generation, md_gap, md_training):
        try:
            part = section(results)
        except (KeyError, TypeError, ValueError) as err:
            part = [f"({section.__name__}: not shown, {type(err).__name__}: {err})"]
        lines += part + [""] if part else []
    return "\n".join(lines)


def write_outputs(results: dict[str, Any], out: Path, start: float, announce: bool = True) -> None:
    """The JSON first: the tables are derived from it and must never cost the numbers."""
    out.mkdir(parents=True, exist_ok=True)
    results["total_s"] = time.perf_counter() - start
    (out / "gpu.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / "gpu.md").write_text(markdown(results))
    if announce:
        print(f"[gpu-check] wrote {out / 'gpu.json'} and {out / 'gpu.md'}", flush=True)


#: How long past the budget a phase may run before the watchdog ends the process.
WATCHDOG_GRACE_S = 40.0


def start_watchdog(results: dict[str, Any], ctx: dict[str, Any], out: Path, grace_s: float) -> threading.Timer:
    """A hung phase (a kernel that never returns) cannot be interrupted from Python: after the
    budget plus a grace period, write what is measured and leave the process."""
    def fire() -> None:
        try:
            results["phases"].setdefault(ctx.get("phase", "?"), {}).update(
                status="error", error="watchdog: the run outlived its budget")
            write_outputs(results, out, ctx["start"])
        finally:  # even if the hung phase was mid-way through changing `results`
            os._exit(3)

    timer = threading.Timer(ctx["deadline"] - time.perf_counter() + grace_s, fire)
    timer.daemon = True
    timer.start()
    return timer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cpu, or auto (CUDA when available)")
    parser.add_argument("--tiny", action="store_true", help="a toy model and a few steps: the CPU dry run CI executes")
    parser.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "bench" / "results" / "gpu"),
                        help="output folder (default: $OUT when set, else bench/results/gpu)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for all phases together (default: 400 full, 120 tiny)")
    parser.add_argument("--phases", nargs="+", choices=[name for name, _ in PHASES], default=None,
                        help="run only these phases (default: all)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_turngym_importable()
    import torch

    from turngym.trainers.trainer import resolve_device

    device = resolve_device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("[gpu-check] --device cuda, but torch sees no CUDA device here (use --device cpu --tiny)", file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.zeros(1, device=device)  # create the CUDA context now, not inside the first phase's clock
    size_name = "tiny" if args.tiny else "full"
    budget = args.budget or BUDGET_S[size_name]
    info = environment(device)  # imports transformers: start-up, before the phases' clock starts
    start = time.perf_counter()
    ctx: dict[str, Any] = {"device": device, "size": SIZES[size_name], "start": start, "deadline": start + budget}
    results: dict[str, Any] = {"schema": 1, "device": device.type, "size": size_name, "model": SIZES[size_name]["model"],
                               "budget_s": budget, "environment": info, "phases": {}}
    if device.type == "cuda":
        # fp32 matmuls (the warm start, the fp32 rollouts) may use TF32, as any GPU trainer would
        torch.backends.cuda.matmul.allow_tf32 = True
    out = Path(args.out)
    timer = start_watchdog(results, ctx, out, grace_s=WATCHDOG_GRACE_S)
    chosen = set(args.phases or [name for name, _ in PHASES])
    for name, fn in PHASES:
        if name in chosen:
            run_phase(name, fn, ctx, results)
            # after every phase: a run killed from outside (the device tool's limit) keeps them
            write_outputs(results, out, start, announce=False)
    timer.cancel()
    write_outputs(results, out, start)
    return 0 if all(rec["status"] == "ok" for rec in results["phases"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
