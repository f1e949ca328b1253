"""The training config: one flat pydantic model per component, and the whole run as their sum.

No environment-specific keys: an environment is an id plus its constructor kwargs, so adding an
environment never touches this file. YAML examples live in ``examples/``; any field can be
overridden on the command line (``turngym train CONFIG --set optim.lr=1e-5``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from turngym.agents.rollout import RolloutConfig
from turngym.trainers.losses import LossConfig

__all__ = ["EnvConfig", "PolicyConfig", "EstimatorConfig", "OptimConfig", "RunConfig", "MultiTaskConfig", "SFTConfig",
           "TrainConfig"]

_STRICT = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class TrainRolloutConfig(RolloutConfig):
    """The rollout engine's config (``turngym.agents.rollout.RolloutConfig``) plus where the
    environments live; unknown keys are errors."""

    model_config = _STRICT
    backend: str = "thread"
    """Where environments live: ``thread`` (in process) or ``ray`` (Ray actors, extra [ray])."""
    ray_actors: int = Field(2, ge=1)
    """Environment actors when ``backend`` is ``ray``."""
    ray_cpus_per_actor: float = 1.0
    """CPUs Ray reserves per environment actor."""
    ray_address: str | None = None
    """Ray cluster to join (``auto``: the running one); None starts a local Ray."""


class EnvConfig(BaseModel):
    """Which environment to train on."""

    model_config = _STRICT
    id: str = "turngym/Sokoban-v0"
    """A registered environment id (``turngym envs``)."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Constructor arguments of the environment (passed to ``turngym.make``)."""
    train_tasks: Literal["auto", "generated", "split"] = "auto"
    """Where training tasks come from: ``generated`` draws fresh tasks from the suite's generator
    (an unbounded stream, reproducible from ``run.seed`` and the data cursor, never equal to a
    held-out task), ``split`` walks the frozen ``train_split``; ``auto`` is ``generated`` when
    the suite has a generator (grid puzzles) and ``split`` otherwise."""
    train_split: str = "train"
    """The frozen split training tasks come from when they are not generated."""
    eval_split: str = "test"
    """Held-out split of the periodic evaluation."""


class PolicyConfig(BaseModel):
    """The model being trained."""

    model_config = _STRICT
    model: str = "tiny"
    """A model spec (``tiny``, ``tiny-markov``, ``smollm2``, a directory or a Hugging Face id)."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``."""
    lora: bool = False
    """Train LoRA adapters (peft) instead of all weights; the reference model is then the
    adapter-disabled base."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: int = 16
    """LoRA scaling numerator."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA path."""
    lora_target_modules: list[str] | None = None
    """Module names to adapt (None: peft's default for the architecture)."""
    max_batch_size: int = 256
    """Most prompts per generate call (a step's rollouts in as few decode loops as fit)."""
    reuse_kv: bool = True
    """Keep each reply's keys and values for the next turn's prompt (``hf`` backend;
    ``agents/hf.py``, "KV reuse"): a multi-turn prompt that extends the last one prefills only
    the new messages. A template that shows only the latest observation (``tiny-markov``) never
    extends a held prompt, and matching and copying the held entries costs more than the few
    shared tokens save."""
    draft_budget: int = Field(default=64, ge=0)
    """Most draft tokens a decode forward feeds over the whole batch (``hf`` backend; at most 64
    and at least 4 a row, else none): guesses of the next tokens, from the policy's earlier
    replies or the prompt, checked in one forward (``agents/hf.py``, "Drafts"); the tokens are
    those of one token per forward. The default suits a model whose forward is compute-bound
    at a few dozen rows (SmolLM2); a tiny model's forward costs its overhead even at a hundred
    rows, and drafts pay there (the main job: 2048). 0: one token per forward."""
    torch_threads: int | None = None
    """CPU threads for torch (None: torch's default). Tiny models on a small CPU run fastest
    with 1: OpenMP's thread hand-offs cost more than their matrices, and the environments
    need a core too."""
    backend: str = "hf"
    """Engine that generates rollouts and evaluations: ``hf`` (transformers, the trained model
    itself) or ``vllm`` (a vLLM engine on the GPU, the weights pushed into it after every update;
    extra ``[gpu]``). See :mod:`turngym.trainers.backends`."""
    vllm: dict[str, Any] = Field(default_factory=dict)
    """``vllm.LLM`` keyword arguments for ``backend: vllm`` (``gpu_memory_utilization``,
    ``max_model_len``, ``enforce_eager``, ...)."""

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        from turngym.trainers.backends import POLICY_BACKENDS

        if value not in POLICY_BACKENDS:
            raise ValueError(f"unknown policy.backend {value!r}; known: {', '.join(sorted(POLICY_BACKENDS))}")
        return value


class EstimatorConfig(BaseModel):
    """How turns are credited (``turngym.trainers.estimate``)."""

    model_config = _STRICT
    name: str = "grpo"
    """Estimator name: grpo, dr_grpo, rloo, reinforce_pp, gigpo, flow_grpo, stratified."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Estimator options (docs/algorithms.md), e.g. ``{mode: mean_std_norm, gamma: 0.95}``."""


class OptimConfig(BaseModel):
    """The optimiser and the shape of an update."""

    model_config = _STRICT
    lr: float = 1e-5
    """AdamW learning rate (the peak, when a schedule is set)."""
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    """How the rate changes over ``run.steps``: constant, or a linear / cosine decay to 0 at the
    last step (settles the final policy instead of ending on a noisy update)."""
    warmup_steps: int = Field(0, ge=0)
    """Training steps of linear warm-up to ``lr`` before the schedule."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient-norm clip (0 disables)."""
    ppo_epochs: int = Field(1, ge=1)
    """Passes over each batch of rollouts."""
    mini_batches: int = Field(1, ge=1)
    """Optimizer steps per pass (the rows are split into this many mini-batches)."""
    old_logprobs: Literal["recompute", "rollout"] = "recompute"
    """The PPO ratio's old policy when an update makes several optimizer steps: ``recompute``
    runs the training model over every row once before the first step; ``rollout`` takes the
    logprobs the rollout engine sampled with, and saves that pass. They are the same numbers up
    to float rounding when the engine is the training model at the same weights (``hf``
    backend, synchronous rollouts); with another engine (vLLM) ``rollout`` makes the ratio
    correct for the engine's own numerics too, as asynchronous rollouts always do. The gap
    between the two is logged (``train/rollout_train_gap_*``) either way."""
    micro_batch_tokens: int = Field(8192, ge=1)
    """Padded-token budget of one forward/backward micro-batch (length-bucketed)."""
    share_prompts: bool = True
    """Run a prompt that several sequences start with once, their rests as branches of one
    sequence (a group's first prompt; with windowed memory, turns that saw the same
    observation), where the prompt is at least as long as their average rest; the loss is the
    same up to float rounding. Needs SDPA attention; other models train as before."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """Autocast the update (``accelerate``); ``no`` keeps the plain fp32 path. bf16 wants a GPU."""

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        return "no" if value is False else value  # YAML reads a bare `no` as false


class RunConfig(BaseModel):
    """The loop around the updates."""

    model_config = _STRICT
    steps: int = Field(50, ge=0)
    """Training steps (one step = one batch of rollouts and its update)."""
    tasks_per_step: int = Field(8, ge=1)
    """Distinct tasks per step; each is rolled out ``rollout.group_size`` times."""
    seed: int = 0
    """Seed of the data order, sampling and initialisation."""
    out_dir: str = "runs/default"
    """Where checkpoints, metrics, plots and evaluations go."""
    eval_every: int = Field(10, ge=0)
    """Evaluate on the held-out split every N steps (0: only at the start and the end)."""
    eval_tasks: int | None = Field(None, ge=1)
    """Held-out tasks per evaluation (None: the whole split)."""
    eval_runs: int = Field(1, ge=1)
    """Episodes per held-out task."""
    eval_temperature: float = 0.0
    """Sampling temperature for evaluation (0 = greedy)."""
    checkpoint_every: int = Field(10, ge=0)
    """Checkpoint every N steps (and always at the end); 0: only at the end."""
    keep_checkpoints: int = 2
    """How many checkpoints to keep."""
    dynamic_sampling: bool = False
    """DAPO: drop groups whose rewards are all equal and refill with new rollouts."""
    max_refill_rounds: int = 10
    """DAPO: most refill rounds per step."""
    tensorboard: bool = True
    """Write TensorBoard event files beside metrics.jsonl."""
    wandb: bool = False
    """Log to Weights & Biases (needs ``pip install wandb``)."""
    sample_trajectories: int = 4
    """Training trajectories (with their advantages) saved at each evaluation, in ``samples/``."""
    overlong_cache_tokens: int = Field(0, ge=0)
    """DAPO overlong shaping (0: off): a reply longer than ``rollout.max_tokens`` minus this many
    tokens gets a penalty on its turn's reward, ramping linearly to -1 at ``rollout.max_tokens``."""
    async_rollouts: bool = False
    """Generate step k+1's rollouts (with a copy of the model) while step k trains; the PPO
    ratio then uses the rollout logprobs as the old policy, correcting the staleness."""
    max_staleness: int = Field(1, ge=0)
    """With ``async_rollouts``: step k's rollouts use exactly the weights of step k - max_staleness."""
    deterministic: bool = False
    """torch deterministic algorithms (exact resume equivalence; slower on GPU)."""


class MultiTaskConfig(BaseModel):
    """MT-GRPO: balance task families by improvement-aware weights (docs/algorithms.md section 6;
    ``turngym.trainers.multitask``). Off unless ``key`` is set."""

    model_config = _STRICT
    key: str | None = None
    """The task metadata field whose value names a task's family (a kind, a difficulty level);
    None: one family, plain sampling."""
    lam: float = Field(0.2, ge=0.0)
    """lambda in s_k = I_k + lambda * J_k (how much the current reward counts next to the improvement)."""
    beta: float = Field(0.025, gt=0.0)
    """Step size of the task-logit update."""
    cap: float = Field(5.0, ge=1.0)
    """Most over-generation of a family whose groups are often all-equal (with dynamic sampling)."""
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    """EMA momentum of each family's zero-gradient rate."""


class SFTConfig(BaseModel):
    """Supervised warm start on the environment's expert demonstrations (``expert_reply``)."""

    model_config = _STRICT
    enabled: bool = False
    """Run the warm start before RL (``turngym train``); ``turngym sft`` runs it alone."""
    episodes: int = Field(200, ge=1)
    """Expert episodes to record (over the train split)."""
    epochs: int = Field(3, ge=1)
    """Passes over the demonstrations (when ``steps`` is not set)."""
    steps: int | None = Field(None, ge=1)
    """Optimizer steps of the warm start, cycling over the demonstrations (None: ``epochs``
    passes). Sizing the warm start by steps makes a seed fix the whole run."""
    lr: float = 1e-3
    """AdamW learning rate of the warm start."""
    batch_rows: int = Field(64, ge=1)
    """Demonstration turns per optimizer step."""
    recovery_rate: float = Field(0.0, ge=0.0, lt=1.0)
    """Chance, before each expert turn, that the environment first gets a misspelt copy of the
    expert's reply, so the demonstrations also show recovering from an invalid reply."""
    max_seconds: float | None = None
    """A safety limit: stop the warm start after this long, with a warning (the run then depends
    on the machine's speed, not only on its seed). None: no limit."""
    stop_at_success: float | None = Field(None, gt=0.0, le=1.0)
    """Stop the warm start once its greedy success on ``check_tasks`` validation tasks reaches
    this (checked every ``check_every`` steps; ``steps`` is then the most it runs). The
    validation tasks are generated (another stream than training's, never a held-out task) or,
    for a suite without a generator, drawn from the train split. None: run every step."""
    check_every: int = Field(25, ge=1)
    """Warm-start steps between two validation checks (with ``stop_at_success``)."""
    check_from: int = Field(0, ge=0)
    """No validation check before this step (with ``stop_at_success``): early checks of a policy
    that cannot be near the target yet only cost time."""
    check_tasks: int = Field(200, ge=1)
    """Validation tasks per check (with ``stop_at_success``): one greedy episode each."""
    stop_nearest: bool = False
    """With ``stop_at_success``: stop at whichever of the first check that reaches the target and
    the check before it came nearer the target, with that check's weights (the held-out success
    the warm start ends at then spreads less when the curve jumps between checks)."""


class TrainConfig(BaseModel):
    """A whole training run."""

    model_config = _STRICT
    env: EnvConfig = Field(default_factory=EnvConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    rollout: TrainRolloutConfig = Field(default_factory=TrainRolloutConfig)
    estimator: EstimatorConfig = Field(default_factory=EstimatorConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    multitask: MultiTaskConfig = Field(default_factory=MultiTaskConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)
