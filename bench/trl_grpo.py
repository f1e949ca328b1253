"""Training throughput: turngym's trainer vs TRL's ``GRPOTrainer``, single-turn, same run.

Issue #5's target: training tokens/s of turngym >= TRL's ``GRPOTrainer`` on the same tiny
model, the same prompts and the same batch shape (ratio >= 1.0).

Both sides, for each model spec:

- **the same weights**: ``turngym.agents.models.load_model(spec)`` (seeded; a fresh copy for
  every repeat of either framework), float32 on the CPU, ``torch.set_num_threads(--threads)``;
- **the same prompts**: FrozenLake 4x4 with ``max_turns=1`` (each episode is one turn). The
  tasks are the ones turngym's data cursor walks; TRL gets each task's first-turn prompt as
  the exact text turngym's :class:`~turngym.agents.agent.Agent` renders (its token ids are
  checked equal to turngym's before anything runs, and turngym's own prompts are checked too);
- **the same batch shape**: one optimizer step = 16 prompts x 8 completions, sampled at
  temperature 1.0, at most 24 new tokens, one PPO/GRPO pass (``num_iterations=1``), no KL term
  and no reference model, the same learning rate, clip range (0.2 / 0.28), grad clip (1.0) and
  token-mean loss. TRL: ``per_device_train_batch_size=128, gradient_accumulation_steps=1`` so
  one generation batch of 128 completions feeds one optimizer step; the bench counts the calls
  to the reward function and the prompts and completions each call sees, and fails if that
  shape is not what it asked for;
- **the same reward**: the FrozenLake environment itself scores every completion
  (``reset(task)`` then ``step(reply)``). By default (``--reward shaped``) a small letters
  bonus (``0.01 x`` the share of ASCII letters in the reply) is added on both sides, because a
  random model never reaches the goal: with all-equal rewards every GRPO advantage is 0,
  turngym then skips the update (it drops zero-advantage rows) while TRL still runs it, and the
  comparison would measure rollouts only. ``--reward frozenlake`` measures that case as it is.

Measured: wall time of ``--steps`` optimizer steps after ``--warmup`` warm-up steps
(turngym: ``Trainer.train_step()`` in a loop, no evaluation or checkpoint; TRL: the time
between ``on_step_end`` callbacks inside ``trainer.train()``), tokens = prompt + completion
tokens of every sample in those steps (completions up to and including EOS; turngym also
stops at ``</action>``, TRL only at EOS — completion tokens per step are reported so a
difference shows). The two frameworks alternate, ``--repeats`` times each; the table gives
the median per framework and the ratio of the medians, turngym / TRL.

    python bench/trl_grpo.py                               # tiny-markov h64 and h256x4, 3 repeats
    python bench/trl_grpo.py --model tiny-markov:hidden=64,layers=2,heads=4,seed=0 --steps 5 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import string
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported

import torch  # noqa: E402

import turngym  # noqa: E402
from turngym.agents.agent import Agent, AgentConfig, EpisodeMemory  # noqa: E402
from turngym.agents.models import load_model  # noqa: E402
from turngym.config import load_config  # noqa: E402
from turngym.envs.grid.frozenlake import FrozenLakeEnv  # noqa: E402
from turngym.trainers.config import TrainConfig  # noqa: E402
from turngym.trainers.trainer import Trainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASE_CONFIG = ROOT / "examples" / "main.yaml"
DEFAULT_MODELS = ["tiny-markov:hidden=64,layers=2,heads=4,seed=0", "tiny-markov:hidden=256,layers=4,heads=4,seed=0"]
TASKS_PER_STEP, GROUP, MAX_TOKENS, TEMPERATURE = 16, 8, 24, 1.0
LETTERS = frozenset(string.ascii_letters)


class ShapedFrozenLake(FrozenLakeEnv):
    """FrozenLake plus ``0.01 x`` the share of ASCII letters in the reply, so that a random
    model's samples get unequal rewards and every GRPO advantage is non-zero (see module doc)."""

    def _step(self, action: str):
        obs, reward, terminated, info = super()._step(action)
        bonus = 0.01 * sum(ch in LETTERS for ch in action) / max(len(action), 1)
        return obs, reward + bonus, terminated, info


REWARD_ENVS = {"shaped": "bench/FrozenLakeShaped-v0", "frozenlake": "turngym/FrozenLake-v0"}
turngym.register(REWARD_ENVS["shaped"], ShapedFrozenLake, {"suite": "frozenlake-4x4"},
                 "FrozenLake 4x4 with a letters bonus (bench/trl_grpo.py).")


def turngym_config(model: str, env_id: str, lr: float, out_dir: str, extra: list[str] | None = None) -> TrainConfig:
    """examples/main.yaml made single-turn GRPO with no KL, no SFT, no evaluation or checkpoints,
    on the frozen train split (plus ``extra`` overrides, ``--set``): TRL reads a dataset of task
    ids, and its reward function rebuilds each task from its id, which generated tasks lack."""
    return load_config(TrainConfig, BASE_CONFIG, [
        # one pass over the batch at a constant rate, as TRL's num_iterations=1 (main.yaml's own
        # 2 x 4 updates per batch and cosine schedule would make turngym do 8x the update work),
        # and the environment as TRL's reward function builds it
        f"env.id={env_id}", 'env.kwargs={"max_turns": 1}', "env.train_tasks=split",
        "optim.ppo_epochs=1", "optim.mini_batches=1", "optim.lr_schedule=constant", f"policy.model={model}", "policy.torch_threads=null",
        "estimator.name=grpo", "estimator.options={}", "sft.enabled=false", "loss.use_kl=false",
        "run.eval_every=0", "run.checkpoint_every=0", "run.tensorboard=false", "run.sample_trajectories=0",
        f"run.tasks_per_step={TASKS_PER_STEP}", f"rollout.group_size={GROUP}", f"rollout.max_tokens={MAX_TOKENS}",
        f"rollout.temperature={TEMPERATURE}", f"optim.lr={lr}", f"run.out_dir={out_dir}", *(extra or []),
    ])


def first_turn_prompts(cfg: TrainConfig, tokenizer: Any, task_ids: list[str]) -> dict[str, tuple[str, list[int]]]:
    """task id -> (text, ids) of the first-turn prompt, built as the rollout engine builds it."""
    env = turngym.make(cfg.env.id, **cfg.env.kwargs)
    base = env.unwrapped
    agent = Agent(tokenizer, AgentConfig(**{k: getattr(cfg.rollout, k) for k in AgentConfig.model_fields}))
    out = {}
    for task_id in dict.fromkeys(task_ids):
        obs, _info = env.reset(seed=0, options={"task": task_id})
        memory = EpisodeMemory(instructions=getattr(base, "instructions", ""),
                               tools=[t.schema() for t in getattr(base, "tools", [])], task=obs)
        built = agent.build(memory)
        out[task_id] = (built.text, list(built.ids or []))
    env.close()
    return out


@dataclass
class Run:
    """One framework's measured steps in one repeat."""

    seconds: float
    cpu_seconds: float
    """CPU time of this process (all its threads) over the same steps: less sensitive than wall
    time to other load on a shared machine."""
    steps: int
    prompt_tokens: int
    completion_tokens: int
    samples: int
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return (self.prompt_tokens + self.completion_tokens) / self.seconds

    @property
    def tokens_per_cpu_s(self) -> float:
        return (self.prompt_tokens + self.completion_tokens) / self.cpu_seconds

    @property
    def completion_tokens_per_s(self) -> float:
        return self.completion_tokens / self.seconds


# -- turngym ------------------------------------------------------------------------------------
def run_turngym(model_spec: str, env_id: str, lr: float, warmup: int, steps: int,
                prompts: dict[str, tuple[str, list[int]]], task_ids: list[str], extra: list[str]) -> Run:
    with tempfile.TemporaryDirectory(prefix="bench-trl-tg-") as tmp:
        cfg = turngym_config(model_spec, env_id, lr, f"{tmp}/run", extra)
        model, tokenizer = load_model(model_spec)
        trainer = Trainer(cfg, model=model, tokenizer=tokenizer)
        prompt_tokens = completion_tokens = samples = 0
        rows: list[float] = []
        start = cpu_start = 0.0
        for step in range(warmup + steps):
            if step == warmup:
                start, cpu_start = time.perf_counter(), time.process_time()
            metrics = trainer.train_step()
            trajs = trainer.last_trajectories
            want = task_ids[step * TASKS_PER_STEP:(step + 1) * TASKS_PER_STEP]
            if [t.task_id for t in trajs[::GROUP]] != want or len(trajs) != TASKS_PER_STEP * GROUP:
                raise RuntimeError(f"turngym step {step} ran other tasks than planned")
            if step >= warmup:
                for t in trajs:
                    (turn,) = t.turns  # single-turn: exactly one turn per episode
                    if turn.prompt_ids != prompts[t.task_id][1]:
                        raise RuntimeError(f"turngym's prompt for {t.task_id} differs from the one given to TRL")
                    prompt_tokens += len(turn.prompt_ids)
                    completion_tokens += len(turn.response_ids)
                    samples += 1
                rows.append(metrics.get("train/rows", 0))
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        trainer.logger.close()
    return Run(seconds, cpu_seconds, steps, prompt_tokens, completion_tokens, samples, {"rows_per_step": statistics.mean(rows)})


# -- TRL ----------------------------------------------------------------------------------------
def run_trl(model_spec: str, env_id: str, lr: float, warmup: int, steps: int,
            prompts: dict[str, tuple[str, list[int]]], task_ids: list[str], seed: int,
            gradient_checkpointing: bool = False) -> Run:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    model, tokenizer = load_model(model_spec)
    prompt_len = {text: len(ids) for text, ids in prompts.values()}
    scorer = turngym.make(env_id, max_turns=1)
    calls: list[dict[str, Any]] = []

    def frozenlake_reward(prompts, completions, completion_ids, task_id, **_):
        """The environment's own reward for each completion; also counts what the step saw."""
        rewards = []
        for tid, text in zip(task_id, completions):
            scorer.reset(seed=0, options={"task": tid})
            rewards.append(float(scorer.step(text)[1]))
        calls.append({"task_ids": list(task_id), "samples": len(completions),
                      "prompt_tokens": sum(prompt_len[p] for p in prompts),
                      "completion_tokens": sum(len(c) for c in completion_ids)})
        return rewards

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []
            self.cpu_ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())
            self.cpu_ends.append(time.process_time())

    clock = StepClock()
    dataset = Dataset.from_dict({"prompt": [prompts[t][0] for t in task_ids], "task_id": task_ids})
    with tempfile.TemporaryDirectory(prefix="bench-trl-trl-") as tmp:
        args = GRPOConfig(
            output_dir=tmp, max_steps=warmup + steps, seed=seed, use_cpu=True, bf16=False, fp16=False,
            per_device_train_batch_size=TASKS_PER_STEP * GROUP, gradient_accumulation_steps=1,
            num_generations=GROUP, max_completion_length=MAX_TOKENS, temperature=TEMPERATURE, top_p=1.0, top_k=0,
            beta=0.0, num_iterations=1, epsilon=0.2, epsilon_high=0.28, loss_type="dapo", scale_rewards="group",
            learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
            optim="adamw_torch", use_vllm=False, shuffle_dataset=False, dataloader_num_workers=0,
            logging_strategy="no", save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
            log_completions=False,
            # TRL turns this on by default; off, both sides do the same forward/backward work
            gradient_checkpointing=gradient_checkpointing,
        )
        trainer = GRPOTrainer(model=model, reward_funcs=frozenlake_reward, args=args, train_dataset=dataset,
                              processing_class=tokenizer, callbacks=[clock])
        trainer.train()
    scorer.close()
    total = warmup + steps
    if len(calls) != total or len(clock.ends) != total:
        raise RuntimeError(f"TRL ran {len(clock.ends)} optimizer steps and {len(calls)} reward calls, expected {total}")
    for step, call in enumerate(calls):
        want = task_ids[step * TASKS_PER_STEP:(step + 1) * TASKS_PER_STEP]
        if call["samples"] != TASKS_PER_STEP * GROUP or call["task_ids"][::GROUP] != want:
            raise RuntimeError(f"TRL step {step} saw {call['samples']} completions of other prompts than planned")
    measured = calls[warmup:]
    return Run(clock.ends[-1] - clock.ends[warmup - 1], clock.cpu_ends[-1] - clock.cpu_ends[warmup - 1], steps,
               sum(c["prompt_tokens"] for c in measured), sum(c["completion_tokens"] for c in measured),
               sum(c["samples"] for c in measured))


# -- the report ---------------------------------------------------------------------------------
def versions() -> str:
    import transformers
    import trl

    return f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}"


def table(results: dict[str, dict[str, list[Run]]], params: dict[str, float]) -> list[str]:
    lines = [
        "| model | params | framework | s/step | prompt tok/step | completion tok/step | tokens/s | completion tok/s "
        "| tokens/CPU-s | runs (tokens/s) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    ratios = []
    for spec, by_fw in results.items():
        med, med_cpu = {}, {}
        for fw, runs in by_fw.items():
            med[fw] = statistics.median(r.tokens_per_s for r in runs)
            med_c = statistics.median(r.completion_tokens_per_s for r in runs)
            med_cpu[fw] = statistics.median(r.tokens_per_cpu_s for r in runs)
            s_step = statistics.median(r.seconds / r.steps for r in runs)
            p_step = statistics.median(r.prompt_tokens / r.steps for r in runs)
            c_step = statistics.median(r.completion_tokens / r.steps for r in runs)
            each = ", ".join(f"{r.tokens_per_s:.0f}" for r in runs)
            lines.append(f"| `{spec}` | {params[spec] / 1e6:.2f}M | {fw} | {s_step:.3f} | {p_step:.0f} | {c_step:.0f} | "
                         f"{med[fw]:.0f} | {med_c:.0f} | {med_cpu[fw]:.0f} | {each} |")
        paired = [a.tokens_per_s / b.tokens_per_s for a, b in zip(by_fw["turngym"], by_fw["TRL"])]
        ratios.append(f"| `{spec}` | **{med['turngym'] / med['TRL']:.2f}x** | "
                      f"{', '.join(f'{x:.2f}' for x in paired)} | {med_cpu['turngym'] / med_cpu['TRL']:.2f}x | "
                      f"{'met' if med['turngym'] >= med['TRL'] else 'missed'} |")
    return lines + ["", "| model | ratio turngym / TRL (medians, tokens/s) | per-repeat ratios | ratio of tokens/CPU-s "
                    "| target >= 1.0 (wall) |", "|---|---:|---|---:|---|", *ratios]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", help="model spec (repeatable); default: two tiny-markov sizes")
    parser.add_argument("--steps", type=int, default=8, help="measured optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up steps before the measured ones (>= 1)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per framework, alternating")
    parser.add_argument("--reward", choices=sorted(REWARD_ENVS), default="shaped", help="see the module doc")
    parser.add_argument("--lr", type=float, default=3e-4, help="learning rate of both (every comparison in trl.md used 3e-4)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of both")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra turngym config override (repeatable), e.g. policy.max_batch_size=128")
    parser.add_argument("--trl-gradient-checkpointing", action="store_true",
                        help="keep TRL's default gradient checkpointing (the bench turns it off to match turngym)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "trl.md"), help="markdown report")
    args = parser.parse_args()
    if args.warmup < 1:
        parser.error("--warmup must be at least 1 (TRL's clock starts at the end of a step)")
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    env_id = REWARD_ENVS[args.reward]
    models = args.model or DEFAULT_MODELS
    load_before = os.getloadavg()
    results: dict[str, dict[str, list[Run]]] = {}
    params: dict[str, float] = {}
    started = time.perf_counter()
    for spec in models:
        # The tasks turngym's data cursor walks; TRL reads the same list in order (no shuffling).
        with tempfile.TemporaryDirectory() as tmp:
            cfg = turngym_config(spec, env_id, args.lr, f"{tmp}/run", args.set)
            model, tokenizer = load_model(spec)
            params[spec] = sum(p.numel() for p in model.parameters())
            probe = Trainer(cfg, model=model, tokenizer=tokenizer)
            task_ids = [task.id for task in probe.next_tasks(TASKS_PER_STEP * (args.warmup + args.steps))]
            probe.logger.close()
        prompts = first_turn_prompts(cfg, tokenizer, task_ids)
        for text, ids in prompts.values():  # TRL tokenises the text itself: it must give the same ids
            if tokenizer(text=text)["input_ids"] != ids:
                raise RuntimeError(f"TRL would tokenise {text!r} differently from turngym")
        results[spec] = {"turngym": [], "TRL": []}
        for rep in range(args.repeats):
            for fw in ("turngym", "TRL") if rep % 2 == 0 else ("TRL", "turngym"):
                if fw == "turngym":
                    run = run_turngym(spec, env_id, args.lr, args.warmup, args.steps, prompts, task_ids, args.set)
                else:
                    run = run_trl(spec, env_id, args.lr, args.warmup, args.steps, prompts, task_ids, seed=rep,
                                  gradient_checkpointing=args.trl_gradient_checkpointing)
                results[spec][fw].append(run)
                print(f"{spec} repeat {rep} {fw}: {run.seconds / run.steps:.3f} s/step, {run.tokens_per_s:.0f} tok/s, "
                      f"{run.tokens_per_cpu_s:.0f} tok/CPU-s, "
                      f"{run.completion_tokens / run.steps:.0f} completion tok/step {run.extra or ''}", flush=True)
    load_after = os.getloadavg()
    rows = {spec: statistics.mean(r.extra["rows_per_step"] for r in by_fw["turngym"]) for spec, by_fw in results.items()}
    body = table(results, params)
    cmd = "python bench/trl_grpo.py " + " ".join(
        [f"--model {m}" for m in (args.model or [])] +
        [f"--steps {args.steps}", f"--warmup {args.warmup}", f"--repeats {args.repeats}", f"--reward {args.reward}"] +
        [f"--set {s}" for s in args.set] + (["--trl-gradient-checkpointing"] if args.trl_gradient_checkpointing else []))
    header = [
        f"## Measurement of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
        f"`{cmd}` — {versions()}; {platform.machine()}, {os.cpu_count()} cores, CPU float32, "
        f"torch threads {args.threads} (both), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}.",
        f"Load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
        f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}; whole run {time.perf_counter() - started:.0f} s.", "",
        f"FrozenLake 4x4, `max_turns=1`; {TASKS_PER_STEP} prompts x {GROUP} completions per optimizer step, "
        f"<= {MAX_TOKENS} new tokens, temperature {TEMPERATURE}, lr {args.lr}, no KL, one pass; reward `{args.reward}`; "
        f"{args.warmup} warm-up + {args.steps} measured steps per run, {args.repeats} alternating runs per framework; "
        "tokens = prompt + completion tokens of every sample. turngym trained rows per step (mean): "
        + ", ".join(f"`{s}` {r:.0f}" for s, r in rows.items()) + " (TRL always trains all 128). "
        f"TRL gradient checkpointing: {'on (its default)' if args.trl_gradient_checkpointing else 'off'}; "
        f"turngym extra overrides: {', '.join(f'`{s}`' for s in args.set) or 'none'}.", "",
    ]
    text = "\n".join(header + body) + "\n"
    print(text)
    prepend_report(Path(args.out), text)


TITLE = "# Training throughput: turngym vs TRL GRPOTrainer (single-turn)"


def prepend_report(path: Path, text: str) -> None:
    """Put a new measurement at the top of the report, under its title: the earlier
    measurements (and the notes written about them) stay below it, never overwritten."""
    earlier = path.read_text() if path.exists() else ""
    if earlier.startswith(TITLE):
        earlier = earlier[len(TITLE):].lstrip("\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{TITLE}\n\n{text}" + (f"\n{earlier}" if earlier else ""))


if __name__ == "__main__":
    main()
