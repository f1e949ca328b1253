"""One turn of tool dispatch: budget split, truncation marks, call limits, bad calls as observations."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, Field, ValidationError

from turngym.tools import (
    Tool,
    ToolCall,
    ToolError,
    ToolResult,
    ToolTurnOptions,
    dispatch,
    format_tool_output,
    invalid_reply,
    parse_options,
    parse_tool_calls,
    plain_output,
    read_tool_calls,
    render_tool_call,
    run_tool_calls,
)
from turngym.tools.parsers import PARSERS


class EchoArgs(BaseModel):
    text: str = Field(min_length=1)
    times: int = 1


class StopArgs(BaseModel):
    reason: str


class Recorder:
    """Handlers that remember what they ran, so tests can see which calls really ran."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, str]] = []

    def echo(self, args: EchoArgs) -> str:
        self.ran.append(("echo", args.text))
        if args.text == "refuse":
            raise ToolError("echo refuses that word")
        return args.text * args.times

    def stop(self, args: StopArgs) -> str:
        self.ran.append(("stop", args.reason))
        return f"stopped: {args.reason}"


TOOLS = [Tool("echo", "Repeat text.", EchoArgs), Tool("stop", "End the episode.", StopArgs)]


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


def handlers(rec: Recorder) -> dict:
    return {"echo": rec.echo, "stop": rec.stop}


def echo(text: str, times: int = 1) -> ToolCall:
    return ToolCall(name="echo", arguments={"text": text, "times": times})


def test_one_call_is_marked_and_recorded(rec):
    turn = run_tool_calls([echo("hi", 2)], TOOLS, handlers(rec))
    assert turn.observation == '<tool_output name="echo">\nhihi\n</tool_output>'
    assert turn.valid and turn.skipped == 0
    assert turn.ran == [{"name": "echo", "arguments": {"text": "hi", "times": 2}}]
    assert [(r.name, r.output, r.ok) for r in turn.records] == [("echo", "hihi", True)]


def test_budget_is_split_evenly_and_each_output_truncated_to_its_share(rec):
    opts = ToolTurnOptions(observation_chars=600)
    turn = run_tool_calls([echo("a", 1000), echo("b", 1000), echo("c", 10)], TOOLS, handlers(rec), opts)
    # 600 // 3 calls = 200 characters per call: head 2/3 and tail 1/3 around the marker
    marker = "\n...[800 characters truncated]...\n"
    keep = 200 - len(marker)
    head, tail = keep * 2 // 3, keep - keep * 2 // 3
    assert (head, tail) == (110, 56)

    def body(c: str) -> str:
        return c * head + marker + c * tail

    expected_parts = [
        f'<tool_output name="echo">\n{body("a")}\n</tool_output>',
        f'<tool_output name="echo">\n{body("b")}\n</tool_output>',
        '<tool_output name="echo">\ncccccccccc\n</tool_output>',
    ]
    assert turn.observation == "\n".join(expected_parts)  # 535 characters: within the turn's 600
    # the records keep the full outputs (truncation is only what the model sees)
    assert [len(r.output) for r in turn.records] == [1000, 1000, 10]


def test_budget_share_counts_only_calls_that_may_run(rec):
    # 5 calls, at most 2 run: each of the 2 gets 1200 // 2 = 600, not 1200 // 5 = 240
    opts = ToolTurnOptions(observation_chars=1200, max_calls_per_turn=2)
    turn = run_tool_calls([echo("x", 450)] * 5, TOOLS, handlers(rec), opts)
    assert turn.observation.count("x" * 450) == 2
    assert "truncated" not in turn.observation.split("(skipped")[0]


def test_output_chars_caps_each_call_below_its_share(rec):
    opts = ToolTurnOptions(observation_chars=8000)
    turn = run_tool_calls([echo("z", 1000)], TOOLS, handlers(rec), opts, output_chars=300)
    assert turn.observation == format_tool_output("echo", "z" * 1000, limit=300)
    assert "...[700 characters truncated]..." in turn.observation


def test_whole_turn_is_cut_to_the_observation_budget(rec):
    opts = ToolTurnOptions(observation_chars=200)
    turn = run_tool_calls([echo("q", 170)], TOOLS, handlers(rec), opts)
    # 170 characters fit the call's share (200), but with the tags (+41) the turn does not:
    # the joined turn is cut to 200 again, with the count of what was cut
    assert len(turn.observation) == 200
    assert "\n...[11 characters truncated]...\n" in turn.observation
    assert turn.observation.startswith('<tool_output name="echo">\nqqq')
    assert turn.observation.endswith("qq\n</tool_output>")


def test_calls_beyond_the_limit_are_skipped_with_a_note(rec):
    turn = run_tool_calls([echo(str(i)) for i in range(7)], TOOLS, handlers(rec))  # default limit 4
    assert rec.ran == [("echo", "0"), ("echo", "1"), ("echo", "2"), ("echo", "3")]
    assert turn.skipped == 3 and len(turn.records) == 4
    assert turn.observation.endswith("\n(skipped 3 more tool calls: at most 4 per reply)")
    assert turn.valid  # skipping is not the model's error


def test_unknown_tool_is_an_error_observation_and_later_calls_still_run(rec):
    turn = run_tool_calls([ToolCall(name="nope", arguments={"a": 1}), echo("after")], TOOLS, handlers(rec))
    assert turn.observation == (
        '<tool_output name="nope">\nerror: unknown tool \'nope\'; tools: echo, stop\n</tool_output>\n'
        '<tool_output name="echo">\nafter\n</tool_output>'
    )
    assert not turn.valid
    assert turn.ran == [{"name": "echo", "arguments": {"text": "after", "times": 1}}]
    assert turn.records[0].arguments == {"a": 1} and turn.records[0].ok is False


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({}, "error: invalid arguments for echo: text: Field required"),
        ({"text": ""}, "error: invalid arguments for echo: text: String should have at least 1 character"),
        ({"text": "a", "times": "many"}, "error: invalid arguments for echo: times: Input should be a valid integer"),
    ],
)
def test_invalid_arguments_are_an_error_observation(rec, arguments, message):
    turn = run_tool_calls([ToolCall(name="echo", arguments=arguments)], TOOLS, handlers(rec))
    assert turn.observation.startswith(f'<tool_output name="echo">\n{message}')
    assert not turn.valid and turn.ran == [] and rec.ran == []


def test_tool_error_from_a_handler_is_an_observation(rec):
    turn = run_tool_calls([echo("refuse"), echo("ok")], TOOLS, handlers(rec))
    assert "error: echo refuses that word" in turn.observation and "\nok\n" in turn.observation
    assert [r.ok for r in turn.records] == [False, True] and not turn.valid


def test_other_handler_exceptions_propagate():
    def broken(args):
        raise RuntimeError("the sandbox is gone")

    with pytest.raises(RuntimeError, match="sandbox is gone"):
        run_tool_calls([echo("x")], TOOLS, {"echo": broken})


def test_a_successful_final_call_ends_the_reply(rec):
    calls = [echo("before"), ToolCall(name="stop", arguments={"reason": "done"}), echo("after")]
    turn = run_tool_calls(calls, TOOLS, handlers(rec), final={"stop"})
    assert rec.ran == [("echo", "before"), ("stop", "done")]
    assert turn.observation.endswith('<tool_output name="stop">\nstopped: done\n</tool_output>')
    assert turn.skipped == 0 and "skipped" not in turn.observation


def test_a_failed_final_call_does_not_end_the_reply(rec):
    calls = [ToolCall(name="stop", arguments={}), echo("after")]
    turn = run_tool_calls(calls, TOOLS, handlers(rec), final={"stop"})
    assert rec.ran == [("echo", "after")] and not turn.valid


def test_tool_fn_is_the_handler_when_none_is_given():
    tool = Tool("shout", "Upper-case text.", EchoArgs, fn=lambda args: args.text.upper())
    turn = run_tool_calls([ToolCall(name="shout", arguments={"text": "hey"})], [tool])
    assert turn.observation == '<tool_output name="shout">\nHEY\n</tool_output>'


def test_a_tool_without_any_handler_is_the_environments_bug():
    with pytest.raises(LookupError, match="no handler"):
        run_tool_calls([echo("x")], TOOLS, {})


def test_no_calls_is_an_empty_turn():
    turn = run_tool_calls([], TOOLS, {})
    assert (turn.observation, turn.records, turn.valid) == ("", [], True)


# -- reading the reply ---------------------------------------------------------------------------
def test_read_tool_calls_returns_calls_or_why_not():
    calls, why = read_tool_calls('<tool_call>{"name": "echo", "arguments": {"text": "a"}}</tool_call>', "hermes")
    assert (calls, why) == ([ToolCall(name="echo", arguments={"text": "a"})], "")
    assert read_tool_calls("just words", "hermes") == ([], "no tool call found")
    calls, why = read_tool_calls("<tool_call>{bad</tool_call>", "hermes")
    assert calls == [] and why.startswith("invalid tool call:")


def test_read_tool_calls_extra_adds_the_environments_shortcuts():
    def answer_tag(action: str, calls: list[ToolCall]) -> list[ToolCall]:
        return calls + ([ToolCall(name="stop", arguments={"reason": "tag"})] if "<done/>" in action else [])

    calls, why = read_tool_calls("I am finished <done/>", "hermes", extra=answer_tag)
    assert calls == [ToolCall(name="stop", arguments={"reason": "tag"})] and why == ""
    assert read_tool_calls("nothing", "hermes", extra=answer_tag) == ([], "no tool call found")
    # a parse error wins: the shortcut is not consulted
    assert read_tool_calls("<tool_call>{bad</tool_call> <done/>", "hermes", extra=answer_tag)[0] == []


def test_invalid_reply_observation():
    assert invalid_reply("no tool call found", "Use echo(text).") == "Invalid reply (no tool call found). Use echo(text)."


def test_options_are_validated_and_documented():
    # tool_call_style None: the style the agent names at reset (the model's chat template), else hermes
    assert ToolTurnOptions().model_dump() == {"observation_chars": 8000, "max_calls_per_turn": 4, "tool_call_style": None}
    with pytest.raises(ValidationError):
        ToolTurnOptions(observation_chars=10)
    with pytest.raises(ValidationError):
        ToolTurnOptions(max_calls_per_turn=0)
    with pytest.raises(ValidationError):
        ToolTurnOptions(observation_budget=100)  # a misspelt option is an error, not ignored


# -- the whole contract: dispatch ------------------------------------------------------------------
class Scorer:
    """Handlers that return their reward and termination instead of setting state."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def echo(self, args: EchoArgs) -> ToolResult:
        self.ran.append(args.text)
        if args.text == "refuse":
            raise ToolError("echo refuses that word")
        return ToolResult(args.text, reward=0.25, info={"last": args.text})

    def stop(self, args: StopArgs) -> ToolResult:
        self.ran.append("stop")
        return ToolResult(f"stopped: {args.reason}", reward=1.0, terminated=True, info={"success": True})


def hermes(name: str, **arguments) -> str:
    return render_tool_call(name, arguments, "hermes")


def test_handlers_return_reward_termination_and_info():
    sc = Scorer()
    reply = hermes("echo", text="a") + hermes("stop", reason="done") + hermes("echo", text="after")
    turn = dispatch(reply, TOOLS, {"echo": sc.echo, "stop": sc.stop})
    assert sc.ran == ["a", "stop"]  # a terminating call is the last the reply runs
    assert (turn.reward, turn.terminated, turn.info) == (1.25, True, {"last": "a", "success": True})
    assert turn.valid and turn.error == ""
    assert turn.ran == [{"name": "echo", "arguments": {"text": "a", "times": 1}},
                        {"name": "stop", "arguments": {"reason": "done"}}]


def test_tool_calls_are_the_calls_that_ran():
    sc = Scorer()
    reply = hermes("echo", text="refuse") + hermes("fly") + hermes("echo", text="ok")
    turn = dispatch(reply, TOOLS, {"echo": sc.echo, "stop": sc.stop})
    assert sc.ran == ["refuse", "ok"] and not turn.valid and turn.error == ""
    assert turn.ran == [{"name": "echo", "arguments": {"text": "ok", "times": 1}}]
    assert (turn.reward, turn.terminated) == (0.25, False)  # only calls that ran earn


@pytest.mark.parametrize(("reply", "why"), [
    ("no call at all", "no tool call found"),
    ("<tool_call>{bad</tool_call>", "invalid tool call"),
])
def test_an_unreadable_reply_runs_nothing_and_says_why(reply, why):
    sc = Scorer()
    turn = dispatch(reply, TOOLS, {"echo": sc.echo, "stop": sc.stop})
    assert sc.ran == [] and why in turn.error and not turn.valid
    assert (turn.observation, turn.ran, turn.reward, turn.terminated) == ("", [], 0.0, False)


@pytest.mark.parametrize(("reply", "why"), [
    (hermes("echo", text="a") + hermes("fly"), "unknown tool 'fly'"),
    (hermes("echo", text="a") + hermes("echo", text=""), "invalid arguments for echo: text"),
    (hermes("echo", text="a") * 5, "at most 4 tool calls per reply, got 5"),
    (hermes("echo", text="a") + hermes("echo", text="vetoed"), "vetoed by the environment"),
])
def test_whole_reply_validates_every_call_before_any_runs(reply, why):
    def check(name, args):
        if getattr(args, "text", "") == "vetoed":
            raise ToolError("vetoed by the environment")
        return args

    sc = Scorer()
    turn = dispatch(reply, TOOLS, {"echo": sc.echo, "stop": sc.stop}, whole_reply=True, check=check)
    assert sc.ran == [] and why in turn.error and turn.ran == []


def test_whole_reply_stops_at_the_first_failing_call():
    sc = Scorer()
    reply = hermes("echo", text="refuse") + hermes("echo", text="after")
    turn = dispatch(reply, TOOLS, {"echo": sc.echo, "stop": sc.stop}, whole_reply=True, show=plain_output)
    assert sc.ran == ["refuse"] and turn.observation == "error: echo refuses that word"
    assert not turn.valid and turn.error == "" and turn.ran == []


def test_read_hook_may_reject_the_reply_with_a_reason():
    def read(reply, calls):
        if "<x>" in reply:
            raise ToolError("no x tags here")
        return calls

    assert dispatch("<x>", TOOLS, {}, read=read).error == "no x tags here"


@pytest.mark.parametrize("style", sorted(PARSERS))
def test_every_style_reads_back_what_it_renders(style):
    args = {"text": "naïve \"quotes\"\nnew line", "times": 2}
    assert parse_tool_calls(render_tool_call("echo", args, style), style).calls == [ToolCall(name="echo", arguments=args)]
    turn = dispatch(render_tool_call("echo", args, style), TOOLS, {"echo": Scorer().echo}, style=style)
    assert turn.ran == [{"name": "echo", "arguments": args}]


def test_style_comes_from_the_call_or_the_options_else_hermes():
    llama = render_tool_call("echo", {"text": "a"}, "openai_json")
    assert dispatch(llama, TOOLS, {"echo": Scorer().echo}).error == "no tool call found"
    assert dispatch(llama, TOOLS, {"echo": Scorer().echo}, ToolTurnOptions(tool_call_style="openai_json")).valid
    assert dispatch(llama, TOOLS, {"echo": Scorer().echo}, style="openai_json").valid


def test_options_are_parsed_once_with_one_sentence():
    assert parse_options(ToolTurnOptions, "MyEnv", {"max_calls_per_turn": 2}).max_calls_per_turn == 2
    with pytest.raises(ValueError, match="^invalid option for MyEnv: observation_chars: Input should be greater than or equal to 200$"):
        parse_options(ToolTurnOptions, "MyEnv", {"observation_chars": 10})
    with pytest.raises(ValueError, match="^invalid option for MyEnv: budget: Extra inputs are not permitted$"):
        parse_options(ToolTurnOptions, "MyEnv", {"budget": 10})


# -- replies whose calls came structured (an OpenAI-compatible backend's tool_calls) ----------------
TRICKY = 'a </tool_call> b\n«naïve» 日本\u2028"quoted" \\ <tool_call>{"name": "stop"}'


def test_structured_calls_reach_the_handler_exactly(rec):
    from turngym.tools import ToolAction, structured_action

    action = structured_action("Echoing.", [("echo", {"text": TRICKY})])
    assert isinstance(action, ToolAction) and action.startswith("Echoing.\n<tool_call>")
    turn = dispatch(action, TOOLS, {"echo": rec.echo, "stop": rec.stop})
    assert rec.ran == [("echo", TRICKY)] and turn.valid
    assert turn.ran == [{"name": "echo", "arguments": {"text": TRICKY, "times": 1}}]
    # the same reply as text does not survive its parse: the argument is cut at "</tool_call>"
    rec.ran.clear()
    as_text = dispatch(str(action), TOOLS, {"echo": rec.echo, "stop": rec.stop})
    assert rec.ran != [("echo", TRICKY)]
    assert not as_text.valid or as_text.ran != turn.ran


@pytest.mark.parametrize("whole_reply", [False, True])
@pytest.mark.parametrize("name,args", [("nope", {"text": "x"}), ("echo", {"text": 5}), ("echo", {}),
                                       ("echo", {"text": ""}), ("echo", {"text": "refuse"})])
def test_a_malformed_structured_call_answers_as_the_same_text_call(rec, whole_reply, name, args):
    from turngym.tools import ToolAction, structured_action

    action = structured_action("", [(name, args)])
    assert isinstance(action, ToolAction)
    structured = dispatch(action, TOOLS, {"echo": rec.echo, "stop": rec.stop}, whole_reply=whole_reply)
    text = dispatch(render_tool_call(name, args), TOOLS, {"echo": rec.echo, "stop": rec.stop}, whole_reply=whole_reply)
    assert not structured.valid and structured == text


@pytest.mark.parametrize("args", ["{not json", "[1, 2]", 7])
def test_structured_calls_that_are_no_call_stay_text_and_parse_as_before(rec, args):
    from turngym.tools import ToolAction, structured_action

    action = structured_action("Hm.", [("echo", args)])
    assert type(action) is str and not isinstance(action, ToolAction)
    expected = "Hm.\n<tool_call>" + json.dumps({"name": "echo", "arguments": args}) + "</tool_call>"
    assert action == expected
    turn = dispatch(action, TOOLS, {"echo": rec.echo})
    assert turn.error.startswith("invalid tool call: ") and rec.ran == []
    assert structured_action("just text", []) == "just text"
    assert type(structured_action("", [("", {})])) is str  # no name: the parser says so


def test_a_tool_action_is_its_text_frozen_and_pickles_with_its_calls():
    import pickle

    from turngym.tools import ToolAction, structured_action

    action = structured_action("Go.", [("echo", {"text": TRICKY}), ("stop", {"reason": "done"})])
    assert action == str(action) and hash(action) == hash(str(action))
    with pytest.raises(AttributeError):
        action.calls = ()  # type: ignore[misc]
    back = pickle.loads(pickle.dumps(action))
    assert isinstance(back, ToolAction) and back == action and back.calls == action.calls
    assert [c.name for c in back.calls] == ["echo", "stop"] and back.calls[0].arguments["text"] == TRICKY
    assert type(action.strip()) is str  # a changed copy is plain text, parsed as any reply
    assert json.loads(json.dumps({"action": action})) == {"action": str(action)}


def test_the_reader_sees_the_text_and_the_given_calls(rec):
    from turngym.tools import structured_action

    seen = []

    def read(reply, calls):
        seen.append((reply, calls))
        return calls

    action = structured_action("Think.", [("echo", {"text": "hi"})])
    calls, why = read_tool_calls(action, "react", read)  # the style is not consulted: nothing is parsed
    assert why == "" and calls == [ToolCall(name="echo", arguments={"text": "hi"})]
    assert seen == [(action, calls)]
    assert read_tool_calls(structured_action("x", [("echo", {"text": "hi"})]), None, lambda r, c: [])[1] == \
        "no tool call found"
