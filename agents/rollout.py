"""The batched multi-turn rollout engine.

``RolloutEngine(policy, env, tokenizer, config).run(tasks) -> list[Trajectory]``

- N tasks x G samples (``group_size``): one episode each, all run at once. Each round, every
  active episode's next prompt (built by the :class:`~turngym.agents.agent.Agent` from its
  memory) goes into ONE ``policy.generate`` call; the replies step the environments
  concurrently through an :class:`~turngym.agents.env_pool.EnvPool`; episodes that end leave
  the batch and their environments are released.
- Seeds come from (run seed, run index, task id, sample index): the environment's reset seed,
  and from it the per-turn sampling seeds, so the same config reproduces the same
  trajectories. ``run_episodes(specs)`` runs episodes whose seeds the caller chose (an
  evaluation's work items).
- An environment that raises or misses its deadline ends that episode with status ``error``
  (logged and counted, kept out of training); the other episodes go on.
- Every episode loop of turngym is this one — training, model and scripted evaluation, the
  warm start's expert demonstrations, scripted baselines — so they all build prompts, Turns and
  group ids alike. A scripted policy that reads the episodes (``reads_episodes``: a solver, an
  oracle) is given an :class:`~turngym.agents.policy.EpisodeView` of each beside its prompt,
  and may end an episode by answering :data:`~turngym.agents.policy.ABORT` (status
  ``truncated``, no step).
- Each exchange goes into the episode's memory with the prompt it answered and the sampled
  response ids, so the agent builds the next prompt from them (token in, token out: with
  full-history memory each turn's prompt + response ids are a prefix of the next prompt).
- Each :class:`~turngym.agents.trajectory.Turn` records the exact prompt ids, the response ids
  and logprobs the policy returned, the reward, the anchor of the state the action was taken
  in (reset info for turn 0, then the previous step's info), the stratum after the step,
  validity, tool calls, the rest of the info (plus ``finish_reason``, ``memory_shown`` — past
  exchanges in the prompt — and ``prompt_over_budget`` when even the smallest prompt exceeded
  ``max_prompt_tokens``), and timings. The G samples of a task share
  ``group_id = f"{task_id}@{run nonce}"``.
- Output order: task by task, sample by sample, whatever order episodes finished in.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from turngym.agents.agent import Agent, AgentConfig, BuiltPrompt, EpisodeMemory, Exchange
from turngym.agents.env_pool import EnvPool, EnvResult, ResetRequest, StepRequest, ThreadEnvPool
from turngym.agents.policy import ABORT, Completion, EpisodeView, Policy, SamplingParams
from turngym.agents.progress import Progress
from turngym.agents.trajectory import Trajectory, Turn, hashable_json, json_safe
from turngym.envs.tasks import Task

__all__ = ["EpisodeSpec", "RolloutConfig", "RolloutEngine", "derive_seed", "rollout", "rollout_stats"]

log = logging.getLogger(__name__)

#: Info keys a Turn stores in fields of their own (the rest go to ``Turn.info``).
_OWN_KEYS = frozenset({"anchor", "stratum", "action_valid", "tool_calls", "task_id"})


class RolloutConfig(AgentConfig):
    """How to run a batch of episodes (the agent's memory settings are inherited, flat)."""

    group_size: int = Field(default=8, ge=1)
    """G: episodes per task (the group a GRPO-family estimator normalises within)."""
    max_turns: int | None = Field(default=None, ge=1)
    """Cap on turns per episode on top of the environment's own (status ``truncated``)."""
    step_timeout_s: float = Field(default=60.0, gt=0)
    """Deadline of one environment step; past it the episode ends with status ``error``."""
    reset_timeout_s: float = Field(default=300.0, gt=0)
    """Deadline of making and resetting one environment."""
    concurrency: int = Field(default=16, ge=0)
    """Environment steps run at once (worker threads of the in-process pool). 0 steps them in
    the engine's thread: fastest for CPU-bound pure-Python envs (grid puzzles), but a hung step
    cannot be interrupted (one that overruns ``step_timeout_s`` still ends as ``error``)."""
    seed: int = 0
    """Run seed: environment and sampling seeds derive from it, the task and the sample."""
    temperature: float = 1.0
    """Sampling temperature (0 = greedy)."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    max_tokens: int = Field(default=256, ge=1)
    """Most new tokens per reply."""
    stop: list[str] = Field(default_factory=list)
    """Stop strings (kept in the reply)."""
    progress: bool = True
    """Show a progress bar over episodes."""

    def sampling(self, seeds: list[int] | None = None) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                              stop=list(self.stop), seeds=seeds)


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from any parts (stable across processes and Python versions, unlike hash())."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


@dataclass
class EpisodeSpec:
    """One episode to run: the task, its seed (environment reset; sampling seeds derive from it)
    and its identity in the output."""

    task: str | Task
    seed: int
    group_id: str = ""
    """Default: the task id."""
    traj_id: str = ""
    """Default: ``{task_id}/{position}``."""


@dataclass
class _Episode:
    slot: int
    traj: Trajectory
    task: str | Task
    memory: EpisodeMemory | None = None
    anchor: Any = None
    stratum: Any = None
    observation: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    """The latest observation and info (what a policy that reads episodes is shown)."""
    state: dict[str, Any] = field(default_factory=dict)
    """That policy's scratch space for this episode (EpisodeView.state)."""
    done: bool = False
    turns: list[Turn] = field(default_factory=list)


def _forget(ep: _Episode) -> None:
    """Drop what only a running episode needs: its memory (every prompt's messages and text)
    and the policy's scratch space. Its Turns keep what the trajectory holds; the batch's live
    objects, which the garbage collector walks again and again, stay those of active episodes."""
    ep.memory = None
    ep.state = {}
    ep.info = {}


class RolloutEngine:
    """Runs episodes in batches; see the module docstring.

    ``env`` is a registered env id, a zero-argument factory, or an :class:`EnvPool` (the engine
    then does not own it and does not close it). ``tokenizer``: the one whose chat template
    builds the prompts (prompts are then token ids); by default the policy's own
    (``policy.tokenizer``), and with none the prompts are chat messages (HTTP policies).
    """

    def __init__(
        self,
        policy: Policy,
        env: str | Callable[[], Any] | EnvPool,
        tokenizer: Any = None,
        config: RolloutConfig | None = None,
        env_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.policy = policy
        self.config = config or RolloutConfig()
        if tokenizer is None:
            tokenizer = getattr(policy, "tokenizer", None)
        # A chat-message policy that takes tool schemas per request (OpenAI-compatible
        # endpoints) gets each episode's tools that way, not described in the system message.
        self.native_tools = tokenizer is None and bool(getattr(policy, "native_tools", False))
        # A scripted policy that reads the episodes (policy module doc) is shown each one.
        self.reads_episodes = bool(getattr(policy, "reads_episodes", False))
        self.agent = Agent(tokenizer, AgentConfig(**{k: getattr(self.config, k) for k in AgentConfig.model_fields}),
                           native_tools=self.native_tools)
        self.env_id = env if isinstance(env, str) else getattr(env, "env_id", "")
        self._env = env
        self._env_kwargs = env_kwargs or {}
        self._runs = 0
        self._errors = 0

    # -- the pool ---------------------------------------------------------------------------------
    def _open_pool(self) -> tuple[EnvPool, bool]:
        if isinstance(self._env, EnvPool):
            return self._env, False
        if isinstance(self._env, str):
            from turngym.envs import make

            env_id, kwargs = self._env, self._env_kwargs
            make_env: Callable[[], Any] = lambda: make(env_id, **kwargs)  # noqa: E731
        else:
            make_env = self._env
        pool = ThreadEnvPool(make_env, concurrency=self.config.concurrency,
                             step_timeout_s=self.config.step_timeout_s, reset_timeout_s=self.config.reset_timeout_s)
        return pool, True

    # -- a run --------------------------------------------------------------------------------------
    def run(self, tasks: Sequence[str | Task], run_index: int | None = None) -> list[Trajectory]:
        """G episodes of each task; ``run_index`` (default: this engine's run count) enters seeds and group ids."""
        run_index = self._runs if run_index is None else run_index
        self._runs += 1
        return self.run_episodes(self.plan(tasks, run_index))

    def plan(self, tasks: Sequence[str | Task], run_index: int = 0) -> list[EpisodeSpec]:
        """The episodes of a run: G per task, seeds from (seed, run_index, task id, sample)."""
        cfg = self.config
        nonce = f"s{cfg.seed}r{run_index}"
        specs: list[EpisodeSpec] = []
        occurrences: dict[str, int] = {}
        for task in tasks:
            task_id = task.id if isinstance(task, Task) else str(task)
            k = occurrences.get(task_id, 0)
            occurrences[task_id] = k + 1
            group_id = f"{task_id}@{nonce}" + (f"#{k}" if k else "")
            for g in range(cfg.group_size):
                seed = derive_seed(cfg.seed, run_index, task_id, k * cfg.group_size + g)
                specs.append(EpisodeSpec(task=task, seed=seed, group_id=group_id, traj_id=f"{group_id}/{g}"))
        return specs

    def run_episodes(self, specs: Sequence[EpisodeSpec]) -> list[Trajectory]:
        """Run the given episodes together; one trajectory per spec, in the order of ``specs``."""
        cfg = self.config
        episodes: list[_Episode] = []
        for slot, spec in enumerate(specs):
            task_id = spec.task.id if isinstance(spec.task, Task) else str(spec.task)
            traj = Trajectory(traj_id=spec.traj_id or f"{task_id}/{slot}", group_id=spec.group_id or task_id,
                              task_id=task_id, env_id=self.env_id, seed=spec.seed)
            episodes.append(_Episode(slot=slot, traj=traj, task=spec.task))
        self._errors = 0
        pool, owned = self._open_pool()
        bar = Progress("rollout", total=len(episodes), unit="ep", disable=not cfg.progress, leave=False)
        try:
            self._reset(pool, episodes, bar)
            turn = 0
            while active := [e for e in episodes if not e.done]:
                self._round(pool, active, turn, bar)
                turn += 1
        finally:
            unfinished = [e.slot for e in episodes if not e.done]  # only when the policy raised
            if unfinished:
                pool.release(unfinished)
            if owned:
                pool.close()
            bar.close()
        for ep in episodes:
            ep.traj.turns = ep.turns
        return [e.traj for e in episodes]

    def _reset(self, pool: EnvPool, episodes: list[_Episode], bar: Progress) -> None:
        style = {"tool_call_style": self.agent.tool_call_style}  # the env reads the model's tool-call syntax
        results = pool.reset([ResetRequest(e.slot, e.task, e.traj.seed, style) for e in episodes])
        for ep, res in zip(episodes, results):
            if res.error is not None:
                self._fail(pool, ep, res.error, bar)
                continue
            ep.traj.initial_observation = ep.observation = res.observation
            ep.info = res.info
            ep.memory = EpisodeMemory(instructions=res.instructions, tools=res.tools, task=res.observation)
            ep.anchor = hashable_json(res.info.get("anchor"))
            ep.stratum = hashable_json(res.info.get("stratum"))

    def _round(self, pool: EnvPool, active: list[_Episode], turn: int, bar: Progress) -> None:
        """One turn of every active episode: one generate call, one batch of steps."""
        prompts = [self.agent.build(ep.memory) for ep in active]  # type: ignore[arg-type]
        t0 = time.perf_counter()
        completions = self._generate(pool, active, prompts, turn)
        generate_s = time.perf_counter() - t0
        finished: list[int] = []
        moves: list[tuple[_Episode, BuiltPrompt, Completion, str]] = []
        for ep, prompt, completion in zip(active, prompts, completions):
            if completion.finish_reason == ABORT:  # the policy has no reply: the episode ends unstepped
                self._finish(ep, "truncated", False, bar)
                finished.append(ep.slot)
            else:
                moves.append((ep, prompt, completion, Agent.action_text(completion)))
        results = pool.step([StepRequest(ep.slot, action) for ep, _, _, action in moves]) if moves else []
        for (ep, prompt, completion, action), res in zip(moves, results):
            if res.error is not None:
                self._fail(pool, ep, res.error, bar)
                continue
            self._record(ep, prompt, completion, action, res, generate_s)
            capped = self.config.max_turns is not None and len(ep.turns) >= self.config.max_turns
            if res.terminated or res.truncated or capped:
                self._finish(ep, "ok" if res.terminated else "truncated", bool(res.info.get("success", False)), bar)
                finished.append(ep.slot)
        if finished:
            pool.release(finished)

    def _generate(self, pool: EnvPool, active: list[_Episode], prompts: list[BuiltPrompt], turn: int) -> list[Completion]:
        """One batched ``generate`` over the active episodes, with what this policy takes besides
        the prompts: the tool schemas (``native_tools``), the episodes (``reads_episodes``)."""
        seeds = [derive_seed(ep.traj.seed, "turn", turn) for ep in active]
        extra: dict[str, Any] = {}
        if self.native_tools:
            extra["tools"] = [ep.memory.tools for ep in active]  # type: ignore[union-attr]
        if self.reads_episodes:
            env_of = getattr(pool, "env", None)  # an in-process pool's (env_pool module doc)
            extra["episodes"] = [EpisodeView(
                traj_id=ep.traj.traj_id, task_id=ep.traj.task_id, seed=ep.traj.seed or 0, turn=len(ep.turns),
                observation=ep.observation, info=ep.info, env=env_of(ep.slot) if env_of else None, state=ep.state,
            ) for ep in active]
        completions = self.policy.generate([p.prompt for p in prompts], self.config.sampling(seeds), **extra)
        if len(completions) != len(active):
            raise RuntimeError(f"the policy returned {len(completions)} completions for {len(active)} prompts")
        return completions

    def _record(self, ep: _Episode, prompt: BuiltPrompt, completion: Completion, action: str, res: EnvResult,
                generate_s: float) -> None:
        """The Turn of a stepped reply, and the exchange the agent builds the next prompt from."""
        info = res.info
        ep.turns.append(Turn(
            step=len(ep.turns),
            prompt_ids=prompt.ids or [],
            response_ids=list(completion.token_ids),
            logprobs=list(completion.logprobs),
            prompt_text=prompt.text,
            response_text=action,
            observation=res.observation,
            reward=res.reward,
            anchor=ep.anchor,
            stratum=info.get("stratum", ep.stratum),
            action_valid=bool(info.get("action_valid", True)),
            tool_calls=json_safe(list(info.get("tool_calls", []))),
            info=self._turn_info(info, prompt, completion),
            generate_s=generate_s,
            env_s=res.seconds,
        ))
        ep.anchor = hashable_json(info.get("anchor"))
        ep.stratum = hashable_json(info.get("stratum", ep.stratum))
        ep.observation, ep.info = res.observation, info
        ep.memory.history.append(Exchange(  # type: ignore[union-attr]
            # with structured calls the reply is their text; the calls go in as structure
            action=completion.text if completion.tool_calls else action,
            observation=res.observation, tool_output=bool(info.get("tool_calls")),
            structured_calls=list(completion.tool_calls),
            # token in, token out: the next prompt extends this prompt and the sampled ids
            response_ids=list(completion.token_ids), prompt=prompt))

    @staticmethod
    def _finish(ep: _Episode, status: str, success: bool, bar: Progress) -> None:
        _forget(ep)
        ep.done = True
        ep.traj.status = status
        ep.traj.success = success
        bar.update(1)

    @staticmethod
    def _turn_info(info: dict[str, Any], prompt: BuiltPrompt, completion: Completion) -> dict[str, Any]:
        """The step's other info keys, plus how the reply ended and what the prompt left out."""
        extra = {k: json_safe(v) for k, v in info.items() if k not in _OWN_KEYS}
        extra["finish_reason"] = completion.finish_reason
        extra["memory_shown"] = prompt.shown
        if prompt.over_budget:
            extra["prompt_over_budget"] = True
        return extra

    def _fail(self, pool: EnvPool, ep: _Episode, error: str, bar: Progress) -> None:
        log.warning("episode %s ended with an environment error: %s", ep.traj.traj_id, error)
        _forget(ep)
        ep.done = True
        ep.traj.status = "error"
        ep.traj.error = error
        pool.release([ep.slot])
        self._errors += 1
        bar.update(1)
        bar.set_postfix(errors=self._errors)


def rollout(
    policy: Policy,
    env: str | Callable[[], Any] | EnvPool,
    tasks: Sequence[str | Task],
    tokenizer: Any = None,
    config: RolloutConfig | None = None,
) -> list[Trajectory]:
    """One batched run: ``RolloutEngine(policy, env, tokenizer, config).run(tasks)``."""
    return RolloutEngine(policy, env, tokenizer, config).run(tasks)


def rollout_stats(trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """Counts and rates over a run: episodes by status, turns, success rate and mean reward.

    An episode that errored counts as a failure (with the reward it had earned), as in
    evaluation: leaving it out would report a run whose environment broke as a success."""
    counted = list(trajectories)
    return {
        "episodes": len(trajectories),
        "ok": sum(t.status == "ok" for t in trajectories),
        "truncated": sum(t.status == "truncated" for t in trajectories),
        "error": sum(t.status == "error" for t in trajectories),
        "turns": sum(len(t.turns) for t in trajectories),
        "success_rate": (sum(t.success for t in counted) / len(counted)) if counted else 0.0,
        "mean_reward": (sum(t.total_reward for t in counted) / len(counted)) if counted else 0.0,
    }
