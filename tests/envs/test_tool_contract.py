"""The one tool contract, seen from the environments: every family reads replies with
turngym.tools.dispatch in the style the agent names at reset (the model's chat template), reports
info["tool_calls"] as the calls that ran, and keeps its own observations."""

from __future__ import annotations

import contextlib
import importlib.util
import re
import shutil
from pathlib import Path

import pytest

import turngym
from turngym.agents.agent import Agent, AgentConfig
from turngym.agents.models import tiny_tokenizer
from turngym.agents.rollout import RolloutConfig, rollout
from turngym.agents.scripted import ScriptedPolicy
from turngym.envs.grid.moves import INVALID_HELP
from turngym.tools import ToolCall, detect_style, parse_tool_calls, render_tool_call
from turngym.tools.parsers import PARSERS

ROOT = Path(__file__).resolve().parents[2]
STOCK = ROOT / "examples" / "third_party_env" / "turngym_guess" / "stock.py"

#: A Llama-3.1-style template: tools described as JSON after "Environment: ipython"; the model
#: answers with bare JSON calls ({"name": ..., "parameters": ...}).
LLAMA3_TEMPLATE = (
    "{{- '<|im_start|>system\\nEnvironment: ipython\\n' -}}"
    "{%- if tools is defined and tools -%}{%- for tool in tools -%}{{- tool | tojson + '\\n' -}}{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def llama_tokenizer():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = LLAMA3_TEMPLATE
    return tokenizer


def test_the_agent_reads_the_style_from_the_chat_template_with_an_override():
    assert Agent(tiny_tokenizer()).tool_call_style == "hermes" == detect_style(tiny_tokenizer())
    assert Agent(llama_tokenizer()).tool_call_style == "openai_json"
    assert Agent(None).tool_call_style == "hermes"
    assert Agent(llama_tokenizer(), AgentConfig(tool_call_style="hermes")).tool_call_style == "hermes"
    with pytest.raises(ValueError, match="unknown tool-call style 'yaml'"):
        Agent(None, AgentConfig(tool_call_style="yaml"))


# -- every family, in the style it is told ----------------------------------------------------------
LLAMA_MOVE = '{"name": "move", "parameters": {"direction": "%s"}}'


@pytest.mark.parametrize("env_id", ["turngym/Sokoban-v0", "turngym/FrozenLake-v0"])
def test_grid_reads_the_models_style_and_keeps_action_tags_and_its_invalid_text(env_id):
    env = turngym.make(env_id)
    task = env.unwrapped.suite.split("train")[0]
    first, second = task.answer[:2]
    _, info = env.reset(seed=0, options={"task": task, "tool_call_style": "openai_json"})
    start = info["anchor"]
    obs, reward, term, trunc, info = env.step(LLAMA_MOVE % first)
    assert info["action_valid"] and info["tool_calls"] == [{"name": "move", "arguments": {"direction": first}}]
    assert info["anchor"] != start and obs.startswith(info["anchor"])  # the board, unmarked
    for reply in [f"<action>{second}</action>", second]:  # tags and bare words work in any style
        info = env.step(reply)[4]
        assert info["tool_calls"] == [{"name": "move", "arguments": {"direction": second}}]
        env.reset(seed=0, options={"task": task})
        env.step(LLAMA_MOVE % first)  # the style named at the first reset still holds
    env.reset(seed=0, options={"task": task, "tool_call_style": "hermes"})
    obs, reward, term, trunc, info = env.step(LLAMA_MOVE % first)  # bare JSON is no Hermes call
    assert not info["action_valid"] and info["tool_calls"] == [] and info["anchor"] == start
    assert obs == f"Invalid action (no move found). {INVALID_HELP}\n{start}"  # word for word
    obs = env.step('<tool_call>{"name": "move", "arguments": {"direction": "north"}}</tool_call>')[0]
    assert obs.startswith("Invalid action (invalid arguments for move: direction: Input should be ")


@pytest.mark.skipif(shutil.which("coqc") is None, reason="coqc is not installed (apt-get install coq)")
def test_prover_reads_proofs_as_tool_calls_or_code_blocks():
    env = turngym.make("turngym/Coq-v0")
    task = env.unwrapped.suite.get("coq/add_0_r")
    try:
        env.reset(seed=0, options={"task": task.id, "tool_call_style": "openai_json"})
        obs, reward, term, trunc, info = env.step(render_tool_call("proof", {"text": task.answer}, "openai_json"))
        assert (obs, reward, term, info["tool_calls"]) == ("The proof is complete.", 1.0, True, [{"name": "proof", "arguments": {"text": task.answer}}])
        env.reset(seed=0, options={"task": task.id})
        obs, reward, term, trunc, info = env.step(f"```coq\n{task.answer}\n```")
        assert (reward, term, info["tool_calls"][0]["name"]) == (1.0, True, "proof")
        env.reset(seed=0, options={"task": task.id})
        obs, reward, term, trunc, info = env.step(render_tool_call("tactic", {"text": "auto."}, "openai_json"))
        assert obs.startswith("Invalid reply: unknown tool 'tactic'") and not info["action_valid"]
    finally:
        env.close()


def test_code_env_runs_calls_in_the_models_style():
    from turngym.envs.code.env import CodeEnv

    env = CodeEnv(backend="local", max_turns=4)
    try:
        env.reset(seed=0, options={"task": "turngym-code/reverse_string", "tool_call_style": "openai_json"})
        reply = env.unwrapped.expert_reply()
        assert reply.startswith('{"name": "submit", "parameters": ')
        obs, reward, term, trunc, info = env.step(reply)
        assert (reward, term, info["success"], info["tests_passed"] == info["tests_total"]) == (1.0, True, True, True)
        assert [c["name"] for c in info["tool_calls"]] == ["submit"]
    finally:
        env.close()
        from turngym.sandboxes import close_shared_pools

        close_shared_pools()


def test_searchworld_reads_llama_json_and_its_expert_writes_it():
    env = turngym.make("turngym/SearchWorld-v0")
    env.reset(seed=0, options={"tool_call_style": "openai_json"})
    reply = env.unwrapped.expert_reply()
    assert reply.startswith('{"name": "search", "parameters": ')
    obs, reward, term, trunc, info = env.step(reply)
    assert info["action_valid"] and [c["name"] for c in info["tool_calls"]] == ["search"]
    assert obs.startswith('<tool_output name="search">')


# -- the instructions and help show the call in the model's style -----------------------------------
SEARCH_CALL = ToolCall(name="search", arguments={"query": "..."})
HOW_TO_CALL = {  # env id: (options, the instructions' example call, the help's example call)
    "turngym/Search-v0": ({}, SEARCH_CALL, SEARCH_CALL),
    "turngym/SearchWorld-v0": ({}, SEARCH_CALL, SEARCH_CALL),
    "turngym/Code-v0": ({"backend": "local"}, ToolCall(name="python", arguments={"code": "print(1)"}),
                        ToolCall(name="python", arguments={"code": "..."})),
}


@contextlib.contextmanager
def made(env_id, **options):
    env = turngym.make(env_id, **HOW_TO_CALL[env_id][0], **options)
    try:
        yield env
    finally:
        env.close()
        from turngym.sandboxes import close_shared_pools

        close_shared_pools()


@pytest.mark.parametrize("style", sorted(PARSERS))
@pytest.mark.parametrize("env_id", sorted(HOW_TO_CALL))
def test_instructions_and_help_show_a_call_that_reads_back_in_the_episodes_style(env_id, style):
    _, instructed, helped = HOW_TO_CALL[env_id]
    with made(env_id) as env:
        obs, _ = env.reset(seed=0, options={"tool_call_style": style})
        invalid = env.step("no tool call here")[0]
        for text, call in [(env.unwrapped.instructions, instructed), (obs, helped), (invalid, helped)]:
            result = parse_tool_calls(text, style)
            assert result.calls == [call] and not result.errors, (style, text)


@pytest.mark.parametrize("env_id", sorted(HOW_TO_CALL))
def test_the_default_instructions_are_hermes_word_for_word(env_id):
    _, instructed, helped = HOW_TO_CALL[env_id]
    with made(env_id) as env:
        base = env.unwrapped
        hermes = f"Call a tool as {render_tool_call(instructed.name, instructed.arguments)}."
        assert base.instructions == type(base).instructions and hermes in base.instructions
        obs, _ = env.reset(seed=0)
        assert base.instructions == type(base).instructions
        assert f"\nCall a tool as {render_tool_call(helped.name, helped.arguments)}; tools: " in obs
        env.reset(seed=0, options={"tool_call_style": "react"})
        assert "Action: " in base.instructions
        env.reset(seed=0, options={"tool_call_style": "hermes"})
        assert base.instructions == type(base).instructions


def test_a_style_fixed_at_make_shows_before_the_first_reset():
    with made("turngym/Search-v0", tool_call_style="openai_json") as env:
        assert parse_tool_calls(env.unwrapped.instructions, "openai_json").calls == [SEARCH_CALL]


# -- the GUI environments: the same, built without a browser (a real reset: tests/gui/test_envs.py)
GUI_CLICK = ToolCall(name="click", arguments={"ref": "e12"})
GUI_HERMES_HINT = ('call one of click, type, select, press, scroll, answer as '
                   '<tool_call>{"name": "click", "arguments": {"ref": "e12"}}</tool_call>')


@pytest.mark.parametrize("style", sorted(PARSERS))
def test_gui_instructions_help_and_examples_read_back_in_the_episodes_style(style):
    from turngym.envs.gui.actions import parse_actions
    from turngym.envs.gui.env import gui_instructions
    from turngym.envs.gui.webapps import WebAppEnv

    result = parse_tool_calls(gui_instructions(style), style)
    assert result.calls == [GUI_CLICK] and not result.errors, style
    error = parse_actions("just words", {}, style).error
    assert error.startswith("no tool call found; call one of click, type, select, press, scroll, answer as")
    if style == "hermes":
        assert error == f"no tool call found; {GUI_HERMES_HINT}"
    result = parse_tool_calls(error, style)  # a real call, in every style
    assert result.calls == [GUI_CLICK] and not result.errors, (style, error)
    env = WebAppEnv()  # no browser until reset
    env.tool_call_style = style
    click, scroll, *_ = env.example_actions()
    assert parse_tool_calls(click, style).calls == [ToolCall(name="click", arguments={"ref": "e1"})]
    assert parse_tool_calls(scroll, style).calls == [ToolCall(name="scroll", arguments={"direction": "down"})]


def test_the_default_gui_text_is_hermes_word_for_word():
    from turngym.envs.gui.actions import call_hint, parse_actions, read_shorthand
    from turngym.envs.gui.env import GUI_INSTRUCTIONS, GUIEnv, gui_instructions
    from turngym.envs.gui.webapps import WebAppEnv
    from turngym.tools import ToolError

    hermes = f"Act by calling tools, e.g. {render_tool_call('click', {'ref': 'e12'})}. Tools: click(ref), "
    assert GUI_INSTRUCTIONS == gui_instructions() == gui_instructions("hermes") == GUIEnv.instructions
    assert hermes in GUI_INSTRUCTIONS and WebAppEnv().instructions == GUI_INSTRUCTIONS
    assert call_hint() == call_hint("hermes") == GUI_HERMES_HINT
    assert parse_actions("just words", {}).error == f"no tool call found; {GUI_HERMES_HINT}"
    with pytest.raises(ToolError) as err:
        read_shorthand("just words", [])
    assert str(err.value) == f"no tool call found; {GUI_HERMES_HINT}"
    assert WebAppEnv().example_actions()[:2] == ['<tool_call>{"name": "click", "arguments": {"ref": "e1"}}</tool_call>',
                                                 '<tool_call>{"name": "scroll", "arguments": {"direction": "down"}}</tool_call>']


def test_gui_reports_the_calls_that_ran():
    from turngym.envs.gui.actions import parse_actions

    refs = {"e5": "f2e5"}
    reply = render_tool_call("click", {"ref": "e5"}, "openai_json") + "\n" + render_tool_call("scroll", {"direction": "up"}, "openai_json")
    parsed = parse_actions(reply, refs, style="openai_json")
    assert parsed.error == "" and [(c.name, getattr(a, "ref", None)) for c, a in parsed.calls] == [("click", "f2e5"), ("scroll", None)]


def test_unknown_style_at_reset_is_one_sentence():
    env = turngym.make("turngym/FrozenLake-v0")
    with pytest.raises(ValueError, match="unknown tool-call style 'xml'"):
        env.reset(seed=0, options={"tool_call_style": "xml"})


# -- the example tool-using environment, through a rollout ----------------------------------------
def load_stock_env():
    spec = importlib.util.spec_from_file_location("turngym_example_stock", STOCK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.StockEnv


def test_example_tool_env_is_at_most_sixty_lines():
    assert len(STOCK.read_text().splitlines()) <= 60


def expert(style: str):
    """Looks both warehouses up, then answers their sum, writing calls in ``style``."""

    def reply(prompt: str, seed) -> str:
        item = re.search(r"How many (\w+) are in stock", prompt).group(1)
        counts = [int(n) for n in re.findall(r'<tool_output name="stock">\n(\d+)\n', prompt)]
        if len(counts) < 2:
            return render_tool_call("stock", {"item": item, "warehouse": ["north", "south"][len(counts)]}, style)
        return render_tool_call("answer", {"total": sum(counts)}, style)

    return reply


@pytest.mark.parametrize("tokenizer,style", [(tiny_tokenizer, "hermes"), (llama_tokenizer, "openai_json")])
def test_example_tool_env_runs_through_a_rollout_in_the_templates_style(tokenizer, style):
    StockEnv = load_stock_env()
    tok = tokenizer()
    config = RolloutConfig(group_size=2, progress=False, concurrency=0, max_tokens=200)
    trajectories = rollout(ScriptedPolicy(expert(style), tok), StockEnv, ["stock-1", "stock-7"], tok, config)
    assert [t.success for t in trajectories] == [True] * 4
    for traj in trajectories:
        assert [t.tool_calls[0]["name"] for t in traj.turns] == ["stock", "stock", "answer"]
        assert [t.reward for t in traj.turns] == [0.0, 0.0, 1.0] and [t.stratum for t in traj.turns] == [1, 2, 2]


def test_an_explicit_style_overrides_the_template():
    StockEnv = load_stock_env()
    tok = llama_tokenizer()
    config = RolloutConfig(group_size=1, progress=False, concurrency=0, max_tokens=200, max_turns=2, tool_call_style="hermes")
    [traj] = rollout(ScriptedPolicy(expert("openai_json"), tok), StockEnv, ["stock-1"], tok, config)
    assert [t.action_valid for t in traj.turns] == [False, False]  # bare JSON is not read as Hermes
    assert traj.turns[0].observation.startswith("Invalid reply (no tool call found).")


def test_example_tool_env_passes_the_checker():
    from turngym.envs.checker import CHECKS, check

    results = check("example/Stock-v0", make_env=load_stock_env())
    assert [(r.name, r.passed) for r in results] == [(name, True) for name in CHECKS], results


# -- structured tool calls reach the environment as structures ----------------------------------------
STRUCTURED_QUERY = 'capital </tool_call> of\n«Frañce» 日本 "x" \\ end'


@pytest.mark.parametrize("env_id", ["turngym/SearchWorld-v0", "turngym/Search-v0"])
def test_a_structured_call_reaches_the_tool_exactly_through_step(env_id):
    from turngym.tools import ToolAction, structured_action

    with made(env_id) as env:
        env.reset(seed=0)
        action = structured_action("Looking it up.", [("search", {"query": STRUCTURED_QUERY})])
        assert isinstance(action, ToolAction)
        obs, reward, term, trunc, info = env.step(action)
        assert info["action_valid"] and info["tool_calls"][0]["name"] == "search"
        assert info["tool_calls"][0]["arguments"]["query"] == STRUCTURED_QUERY
        # as text, the same reply loses the query at "</tool_call>"
        env.reset(seed=0)
        *_, as_text = env.step(str(action))
        assert not as_text["action_valid"] or as_text["tool_calls"][0]["arguments"]["query"] != STRUCTURED_QUERY
        env.reset(seed=0)
        *_, unknown = env.step(structured_action("", [("serach", {"query": "x"})]))
        env.reset(seed=0)
        *_, unknown_text = env.step(render_tool_call("serach", {"query": "x"}))
        assert unknown["action_valid"] is unknown_text["action_valid"] is False
        assert unknown["tool_calls"] == unknown_text["tool_calls"] == []


def test_grid_reads_a_structured_move_and_answers_a_bad_one_as_text():
    from turngym.tools import structured_action

    env = turngym.make("turngym/Sokoban-v0")
    try:
        env.reset(seed=0)
        obs, _, _, _, info = env.step(structured_action("", [("move", {"direction": "sideways"})]))
        env.reset(seed=0)
        obs_text, _, _, _, info_text = env.step(render_tool_call("move", {"direction": "sideways"}))
        assert (obs, info["action_valid"]) == (obs_text, info_text["action_valid"]) and not info["action_valid"]
    finally:
        env.close()
