"""The GUI environments with a real Chromium: scripted policies solve them, random ones do not."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from turngym.envs.gui.apps.tasks import TASK_KINDS, load_webapps
from turngym.envs.gui.miniwob import (
    CORE_TASKS,
    POINTER_TASKS,
    TEST_SEEDS,
    MiniWoBEnv,
    load_miniwob,
    load_miniwob_core,
    load_miniwob_heldout,
)
from turngym.envs.gui.scripted import call, random_reply, solve_reply
from turngym.envs.gui.snapshot import find_ref
from turngym.envs.gui.webapps import WebAppEnv

MINIWOB = load_miniwob_core()
WEBAPPS = load_webapps()


@pytest.fixture(scope="module")
def miniwob(pool):
    env = MiniWoBEnv(suite=MINIWOB, pool=pool)
    yield env
    env.close()


@pytest.fixture(scope="module")
def webapps(pool):
    env = WebAppEnv(suite=WEBAPPS, pool=pool)
    yield env
    env.close()


def run_episode(env, task_id, policy, max_steps=8):
    obs, info = env.reset(options={"task": task_id})
    total, steps = 0.0, 0
    for steps in range(1, max_steps + 1):
        obs, reward, terminated, truncated, info = env.step(policy(env.task, obs))
        total += reward
        if terminated or truncated:
            break
    return total, info, steps


@pytest.mark.parametrize("name", CORE_TASKS)
def test_scripted_policy_solves_miniwob_task(miniwob, name):
    total, info, steps = run_episode(miniwob, f"{name}/10000", solve_reply)
    assert (total, info["success"], steps) == (1.0, True, 1)


# Where ONE's centre is under TWO (the later, so upper, of the two absolutely placed buttons).
_ONE_CENTRE_COVERED = """() => {
  const one = document.getElementById("subbtn"), box = one.getBoundingClientRect();
  const top = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
  return top !== one && !one.contains(top);
}"""


def test_scripted_policy_solves_every_click_test_2_test_seed(miniwob):
    """Every test seed, the ones where the other button covers the target's centre included:
    click(ref) clicks a visible point of the element, as a user would."""
    covered, failed = 0, []
    for seed in TEST_SEEDS:
        obs, _ = miniwob.reset(options={"task": f"click-test-2/{seed}"})
        covered += miniwob.session.run(lambda page: page.evaluate(_ONE_CENTRE_COVERED))
        _, reward, terminated, _, info = miniwob.step(solve_reply(miniwob.task, obs))
        if not (reward == 1.0 and terminated and info["success"]):
            failed.append(seed)
    assert failed == [] and covered >= 3  # the covered case is really exercised


def test_a_partly_covered_button_is_clicked_where_it_shows(webapps):
    webapps.reset(options={"task": "shop-add/0"})
    # A veil over the left 80% of the page's search button; the button's right edge still shows.
    veil = """() => {
      const b = [...document.querySelectorAll("button")].find(x => x.textContent.trim() === "Search");
      const r = b.getBoundingClientRect(), v = document.createElement("div");
      v.style = `position:fixed;left:${r.left - 5}px;top:${r.top - 5}px;width:${r.width * 0.8 + 5}px;` +
                `height:${r.height + 10}px;background:red;z-index:9`;
      document.body.appendChild(v);
      window.clicks = 0;
      b.addEventListener("click", e => { window.clicks++; e.preventDefault(); });
      return r.width;
    }"""
    assert webapps.session.run(lambda page: page.evaluate(veil)) > 0
    button = find_ref(webapps.snapshot.text, "button", "Search")
    obs, *_ = webapps.step(call("click", ref=button))
    assert "clicked" in obs and webapps.session.run(lambda page: page.evaluate("() => window.clicks")) == 1


def test_webapps_expert_through_the_evaluation_runner(pool):
    """`turngym eval --policy scripted:expert` on WebApps: one test task of every kind."""
    from turngym.agents.evaluation.runner import WorkItem
    from turngym.agents.evaluation.scripted import scripted_runner

    tasks = {t.metadata["kind"]: t.id for t in WEBAPPS.split("test")}
    runner = scripted_runner("expert", {"pool": pool})
    trajectories = list(runner([WorkItem(env_id="turngym/WebApps-v0", task_id=task_id, run=0, seed=0)
                                for task_id in tasks.values()]))
    assert [(t.task_id, t.status, t.success) for t in trajectories] == [(i, "ok", True) for i in tasks.values()]


def test_expert_reply_is_none_where_no_solver_knows_the_page(webapps):
    webapps.reset(options={"task": "shop-add/0"})
    assert webapps.expert_reply() is not None
    webapps.task = webapps.task.model_copy(update={"metadata": {**webapps.task.metadata, "kind": "unknown"}})
    assert webapps.expert_reply() is None


@pytest.mark.parametrize("kind", sorted(TASK_KINDS))
def test_scripted_policy_solves_every_webapp_task_kind(webapps, kind):
    total, info, steps = run_episode(webapps, f"{kind}/1000", solve_reply)
    assert total == 1.0 and info["success"] is True
    assert info["stratum"] >= steps  # actions run so far


def test_random_policy_mostly_fails(miniwob, webapps):
    rng = np.random.default_rng(0)
    random_policy = lambda task, obs: random_reply(rng, obs)  # noqa: E731
    some = ["click-button", "enter-text", "click-checkboxes", "login-user", "choose-list", "click-option"]
    results = [run_episode(miniwob, f"{name}/10001", random_policy, max_steps=3)[1].get("success") for name in some]
    results += [run_episode(webapps, f"{kind}/1001", random_policy, max_steps=4)[1].get("success") for kind in sorted(TASK_KINDS)]
    assert sum(bool(s) for s in results) <= len(results) // 2, results


def test_invalid_ref_is_an_error_observation(webapps):
    obs, info = webapps.reset(options={"task": "shop-add/0"})
    obs2, reward, terminated, truncated, info2 = webapps.step(call("click", ref="e999"))
    assert info2["action_valid"] is False and reward == 0.0 and not terminated
    assert "no element with ref 'e999'" in obs2
    assert info2["anchor"] == info["anchor"]  # nothing happened to the page
    obs3, *_, info3 = webapps.step("I would like to buy a shirt")
    assert info3["action_valid"] is False and "no tool call found" in obs3


@pytest.mark.parametrize("style", ["react", "openai_json"])
def test_the_instructions_and_errors_follow_the_style_named_at_reset(pool, style):
    from turngym.envs.gui.env import GUI_INSTRUCTIONS
    from turngym.tools import ToolCall, parse_tool_calls, render_tool_call

    click = ToolCall(name="click", arguments={"ref": "e12"})
    env = WebAppEnv(suite=WEBAPPS, pool=pool)  # its own: the style stays with the env
    try:
        obs, _ = env.reset(options={"task": "shop-add/0", "tool_call_style": style})
        assert parse_tool_calls(env.instructions, style).calls == [click]
        obs, _, _, _, info = env.step("I would like to buy a shirt")
        error = obs.split("\n\nPage: ")[0]
        assert info["action_valid"] is False and "no tool call found" in error
        assert parse_tool_calls(error, style).calls == [click] and "<tool_call>" not in error
        assert [parse_tool_calls(a, style).calls[0].name for a in env.example_actions()[:2]] == ["click", "scroll"]
        *_, info = env.step(render_tool_call("scroll", {"direction": "down"}, style))
        assert info["action_valid"] is True
        env.reset(options={"task": "shop-add/0", "tool_call_style": "hermes"})
        assert env.instructions == GUI_INSTRUCTIONS
    finally:
        env.close()


def test_a_failing_action_is_reported_and_the_episode_goes_on(webapps):
    webapps.reset(options={"task": "shop-add/0"})
    search_box = webapps.snapshot.refs[webapps.snapshot.text.count("\n") and 2]  # any ref will do
    obs, reward, terminated, _, info = webapps.step(call("select", ref=search_box, option="x"))
    assert "error:" in obs and not terminated and info["action_valid"] is False


def test_wrong_answer_ends_the_episode_unsolved(webapps):
    obs, _ = webapps.reset(options={"task": "shop-price/1000"})
    obs, reward, terminated, _, info = webapps.step(call("answer", text="1.00"))
    assert (reward, terminated, info["success"]) == (0.0, True, False)


def test_same_task_same_actions_same_observations(webapps, pool):
    other = WebAppEnv(suite=WEBAPPS, pool=pool)  # another server on another port
    try:
        traces = []
        for env in (webapps, other):
            obs, info = env.reset(options={"task": "form-register/3"})
            trace = [obs, info["anchor"]]
            for _ in range(2):
                obs, reward, term, trunc, info = env.step(solve_reply(env.task, obs))
                trace += [obs, reward, info["anchor"]]
            traces.append(trace)
        assert traces[0] == traces[1]
    finally:
        other.close()


def test_render_and_screenshot(webapps):
    obs, _ = webapps.reset(options={"task": "settings-update/0"})
    assert webapps.render() == obs
    png = webapps.screenshot()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_dict_observations_carry_a_screenshot(pool):
    env = WebAppEnv(suite=WEBAPPS, pool=pool, observation_mode="dict")
    try:
        obs, _ = env.reset(options={"task": "shop-add/0"})
        assert set(obs) == {"text", "screenshot"} and env.observation_space.contains(obs)
        assert obs["text"].startswith("Task: Add") and obs["screenshot"][:4] == b"\x89PNG"
        obs2, *_ = env.step(call("click", ref="e999"))
        assert env.observation_space.contains(obs2) and obs2["screenshot"] == obs["screenshot"]  # same page
    finally:
        env.close()


def test_screenshot_in_info(pool):
    env = WebAppEnv(suite=WEBAPPS, pool=pool, screenshot_in_info=True)
    try:
        _, info = env.reset(options={"task": "shop-add/0"})
        assert info["screenshot"][:4] == b"\x89PNG"
    finally:
        env.close()


def test_registered_and_made_through_turngym(pool):
    import turngym
    from turngym.envs.tasks import suite_names

    assert {"miniwob", "miniwob-core", "miniwob-heldout", "webapps", "webapps-shop"} <= set(suite_names())
    env = turngym.make("turngym/WebApps-v0", suite="webapps-form", pool=pool)
    try:
        obs, info = env.reset(seed=3)
        assert info["task_id"].startswith("form-register/") and "Page: /form/step1" in obs
        assert [t.name for t in env.unwrapped.tools] == ["click", "type", "select", "press", "scroll", "answer"]
    finally:
        env.close()


def test_miniwob_splits():
    core = load_miniwob_core()
    assert core.splits() == {"train": 50 * len(CORE_TASKS), "test": 20 * len(CORE_TASKS)}
    full = load_miniwob()
    names = {t.metadata["task"] for t in full}
    assert len(names) > 80 and not names & POINTER_TASKS
    held = load_miniwob_heldout()
    train = {t.metadata["task"] for t in held.split("train")}
    test = {t.metadata["task"] for t in held.split("test")}
    assert train and test and not train & test and train | test == names


@pytest.mark.parametrize(
    "make",
    [
        lambda pool: MiniWoBEnv(suite=MINIWOB, pool=pool),
        lambda pool: WebAppEnv(suite=WEBAPPS, pool=pool),
        lambda pool: WebAppEnv(suite=WEBAPPS, pool=pool, observation_mode="dict"),
    ],
    ids=["miniwob", "webapps", "webapps-dict"],
)
def test_gymnasium_check_env(pool, make):
    env = make(pool)
    try:
        check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.close()


def test_concurrent_episodes_share_one_browser(pool):
    envs = [WebAppEnv(suite=WEBAPPS, pool=pool) for _ in range(4)]
    kinds = ["shop-add", "form-register", "settings-update", "shop-remove"]
    results: dict[int, float] = {}

    def work(i):
        results[i] = run_episode(envs[i], f"{kinds[i]}/1002", solve_reply)[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        for env in envs:
            env.close()
    assert results == {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}
