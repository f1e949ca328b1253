"""The GUI environments' scripted expert writes its calls in the episode's tool-call style: each
reply reads back, with that style's parser, as the calls the solver meant, and the expert solves
a real task (a real Chromium, as in tests/gui) when the episode is read in that style."""

from __future__ import annotations

from pathlib import Path

import pytest

from turngym.envs.gui.scripted import call, render_calls
from turngym.tools import ToolCall, parse_tool_calls
from turngym.tools.parsers import PARSERS

#: A reply of several calls, one with a non-ASCII argument (settings-update's languages).
CALLS = [ToolCall(name="type", arguments={"ref": "e3", "text": "Ada Lovelace"}),
         ToolCall(name="select", arguments={"ref": "e4", "option": "Français"}),
         ToolCall(name="click", arguments={"ref": "e9"})]


@pytest.mark.parametrize("style", sorted(PARSERS))
def test_several_calls_in_one_reply_read_back_in_every_style(style):
    result = parse_tool_calls(render_calls(CALLS, style), style)
    assert result.calls == CALLS and not result.errors, style


def test_the_default_expert_reply_is_hermes_calls_run_together():
    ascii_calls = [CALLS[0], CALLS[2]]
    old = "".join(call(c.name, **c.arguments) for c in ascii_calls)  # how the expert wrote them before
    assert render_calls(ascii_calls) == render_calls(ascii_calls, "hermes") == old


# -- the "no tool call found" hint: a real call, in the episode's style ----------------------------
HERMES_HINT = ('call one of click, type, select, press, scroll, answer as '
               '<tool_call>{"name": "click", "arguments": {"ref": "e12"}}</tool_call>')


@pytest.mark.parametrize("style", [None, *sorted(PARSERS)])
def test_the_no_call_hint_is_a_call_that_reads_back_in_every_style(style):
    from turngym.envs.gui.actions import HINT_CALL, call_hint, parse_actions, read_shorthand
    from turngym.tools import ToolError

    error = parse_actions("just words", {}, style or "hermes").error
    with pytest.raises(ToolError) as raised:
        read_shorthand("just words", [], style)
    assert error == str(raised.value) == f"no tool call found; {call_hint(style)}"
    result = parse_tool_calls(error, style or "hermes")
    assert result.calls == [HINT_CALL] and not result.errors, (style, error)
    assert HINT_CALL.name == "click" and HINT_CALL.arguments == {"ref": "e12"}  # a GUI tool, valid arguments
    if style in (None, "hermes"):
        assert call_hint(style) == HERMES_HINT  # word for word


# -- a real episode per style --------------------------------------------------------------------
@pytest.fixture(scope="module")
def pool():
    pytest.importorskip("playwright", reason="the GUI tests need Playwright: pip install 'turngym[gui]'")
    if not Path("/usr/bin/chromium").is_file():
        pytest.skip("the GUI tests need Chromium at /usr/bin/chromium (apt-get install chromium)")
    from turngym.sandboxes.browser import BrowserConfig, BrowserPool

    # a roomier timeout than tests/gui's: every action here is valid, so a slow machine only slows it
    browser = BrowserPool(BrowserConfig(action_timeout_s=10.0))
    yield browser
    browser.close()


@pytest.fixture
def envs(pool):  # fresh per test: a style named at one reset holds for the env's later resets
    from turngym.envs.gui.apps.tasks import load_webapps_form
    from turngym.envs.gui.miniwob import MiniWoBEnv, load_miniwob_core
    from turngym.envs.gui.webapps import WebAppEnv

    made = {"miniwob": MiniWoBEnv(suite=load_miniwob_core(), pool=pool),
            "webapps": WebAppEnv(suite=load_webapps_form(), pool=pool)}
    yield made
    for env in made.values():
        env.close()


# enter-text: two calls in one reply; form-register: three pages, up to three calls a reply
@pytest.mark.parametrize("family, task_id", [("miniwob", "enter-text/10000"), ("webapps", "form-register/1000")])
@pytest.mark.parametrize("style", [None, *sorted(PARSERS)])  # None: no style named, so Hermes
def test_the_gui_expert_writes_the_episodes_style_and_solves_the_task(envs, family, task_id, style):
    from turngym.envs.gui.scripted import solve_calls

    env = envs[family]
    env.reset(options={"task": task_id, **({"tool_call_style": style} if style else {})})
    for _ in range(6):
        reply = env.expert_reply()
        meant = solve_calls(env.task, env.render())
        result = parse_tool_calls(reply, style or "hermes")
        assert result.calls == meant and not result.errors, (style, reply)
        obs, reward, terminated, truncated, info = env.step(reply)
        assert info["action_valid"] and [c["name"] for c in info["tool_calls"]] == [c.name for c in meant], (style, reply, obs)
        if terminated or truncated:
            break
    assert terminated and info["success"] and reward == 1.0, (style, task_id)


@pytest.mark.parametrize("style", [None, *sorted(PARSERS)])
def test_a_reply_without_a_call_is_shown_the_hint_call_in_the_episodes_style(envs, style):
    from turngym.envs.gui.actions import HINT_CALL

    env = envs["webapps"]
    env.reset(options={"task": "form-register/1000", **({"tool_call_style": style} if style else {})})
    obs, reward, terminated, _, info = env.step("I am not sure what to do.")
    assert not info["action_valid"] and not terminated and reward == 0.0
    said = obs.split("\n\nPage: ", 1)[0]  # the error, before the page
    assert said.startswith("Invalid action: no tool call found; call one of click, type,")
    assert parse_tool_calls(said, style or "hermes").calls == [HINT_CALL], (style, said)
