"""Tool-call parsers on the kinds of replies real models write."""

from __future__ import annotations

import random
import time

import pytest

from turngym.tools import ToolCall, parse_tool_calls
from turngym.tools.parsers import (
    PARSERS,
    STYLE_RULES,
    call_example,
    detect_style,
    register_parser,
    register_style_rule,
)


def calls(text: str, style: str) -> list[tuple[str, dict]]:
    return [(c.name, c.arguments) for c in parse_tool_calls(text, style).calls]


# -- hermes / qwen -----------------------------------------------------------------------------
QWEN25 = 'I will check the weather first.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>'
QWEN3_THINK = (
    "<think>\nThe box is left of the target, so I push right.\n</think>\n\n"
    '<tool_call>\n{"name": "move", "arguments": {"direction": "right"}}\n</tool_call>'
)
QWEN_TWO = (
    '<tool_call>\n{"name": "search", "arguments": {"query": "Eiffel tower height"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "search", "arguments": {"query": "Statue of Liberty height"}}\n</tool_call>'
)


def test_hermes_reads_qwen_call_and_ignores_text_around_it():
    assert calls(QWEN25, "hermes") == [("get_weather", {"city": "Paris", "unit": "celsius"})]
    assert calls(QWEN3_THINK, "hermes") == [("move", {"direction": "right"})]


def test_hermes_reads_several_calls_in_order():
    result = parse_tool_calls(QWEN_TWO, "hermes")
    assert result.ok
    assert [c.arguments["query"] for c in result.calls] == ["Eiffel tower height", "Statue of Liberty height"]


def test_hermes_mixed_good_and_malformed_calls_keep_the_good_one_and_report_the_bad():
    text = (
        '<tool_call>{"name": "move", "arguments": {"direction": "up"}}</tool_call>\n'
        "<tool_call>{'name': 'move', 'arguments': {'direction': 'down'}}</tool_call>"
    )
    result = parse_tool_calls(text, "hermes")
    assert [c.arguments for c in result.calls] == [{"direction": "up"}]
    assert len(result.errors) == 1 and "malformed JSON" in result.errors[0]
    assert not result.ok


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('<tool_call>{"name": "move", "arguments": {"direction": "up",}}</tool_call>', "malformed JSON"),
        ('<tool_call>\n{"name": "search", "arguments": {"query": "capital of', "cut off"),
        ("<tool_call></tool_call>", "empty"),
        ('<tool_call>{"arguments": {"x": 1}}</tool_call>', '"name"'),
        ('<tool_call>{"name": "move", "arguments": ["up"]}</tool_call>', "JSON object"),
        ('<tool_call>{"name": "move", "arguments": {}} and more</tool_call>', "text after"),
    ],
)
def test_hermes_malformed_calls_become_errors(text, fragment):
    result = parse_tool_calls(text, "hermes")
    assert result.calls == []
    assert len(result.errors) == 1 and fragment in result.errors[0]


def test_hermes_accepts_json_fence_inside_the_tag_and_parameters_key():
    text = '<tool_call>\n```json\n{"name": "move", "parameters": {"direction": "left"}}\n```\n</tool_call>'
    assert calls(text, "hermes") == [("move", {"direction": "left"})]


def test_text_without_calls_gives_no_calls_and_no_errors():
    for style in PARSERS:
        result = parse_tool_calls("The answer is 42. I am done.", style)
        assert result.calls == [] and result.errors == [] and not result.ok


# -- bare JSON: OpenAI / Llama 3.1 ---------------------------------------------------------------
LLAMA31 = '<|python_tag|>{"name": "get_weather", "parameters": {"city": "San Francisco, CA"}}<|eom_id|>'
LLAMA32_TYPE = '{"type": "function", "name": "move", "parameters": {"direction": "down"}}'
OPENAI_TOOL_CALLS = (
    '{"tool_calls": [{"id": "call_abc", "type": "function", "function": {"name": "search", '
    '"arguments": "{\\"query\\": \\"turngym\\", \\"k\\": 3}"}}]}'
)
FENCED = 'Sure, here is the call:\n```json\n{"name": "move", "arguments": "{\\"direction\\": \\"up\\"}"}\n```\nLet me know.'
JSON_LIST = '[{"name": "move", "arguments": {"direction": "up"}}, {"name": "move", "arguments": {"direction": "left"}}]'


def test_openai_json_reads_llama31_python_tag_call():
    assert calls(LLAMA31, "openai_json") == [("get_weather", {"city": "San Francisco, CA"})]


def test_openai_json_reads_llama32_type_function_object():
    assert calls(LLAMA32_TYPE, "openai_json") == [("move", {"direction": "down"})]


def test_openai_json_reads_openai_tool_calls_with_string_arguments():
    assert calls(OPENAI_TOOL_CALLS, "openai_json") == [("search", {"query": "turngym", "k": 3})]


def test_openai_json_reads_fenced_call_with_text_around():
    assert calls(FENCED, "openai_json") == [("move", {"direction": "up"})]


def test_openai_json_reads_a_list_and_semicolon_separated_calls():
    assert [a["direction"] for _, a in calls(JSON_LIST, "openai_json")] == ["up", "left"]
    text = '{"name": "a", "parameters": {}}; {"name": "b", "parameters": {"x": 1}}'
    assert calls(text, "openai_json") == [("a", {}), ("b", {"x": 1})]


def test_openai_json_ignores_braces_in_prose_and_non_call_json():
    text = 'The set {1, 2} has two items; the result {"answer": 3} is final.\n{"name": "stop", "arguments": {}}'
    result = parse_tool_calls(text, "openai_json")
    assert [c.name for c in result.calls] == ["stop"] and result.errors == []


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('{"name": "move", "arguments": {"direction": "up"}', "cut off"),
        ('{"name": "move", "arguments": "{direction: up}"}', "not valid JSON"),
        ("{\"name\": 'move'}", "malformed JSON"),
        ('[{"name": "a", "arguments": {}}, 3]', None),
    ],
)
def test_openai_json_malformed_calls_become_errors(text, fragment):
    result = parse_tool_calls(text, "openai_json")
    assert result.errors, result
    if fragment:
        assert fragment in result.errors[0]
    assert not result.ok


# -- ReAct ------------------------------------------------------------------------------------------
REACT = (
    "Thought: I need to know the population first.\n"
    "Action: search\n"
    'Action Input: {"query": "population of Lyon"}\n'
    "Observation:"
)
REACT_TWO = (
    "Thought: two lookups.\nAction: `lookup`\nAction Input: {\"term\": \"Lyon\"}\n"
    "Thought: and another\nAction: lookup\nAction Input: ```json\n{\"term\": \"Paris\"}\n```\n"
)


def test_react_reads_action_and_input():
    assert calls(REACT, "react") == [("search", {"query": "population of Lyon"})]


def test_react_reads_several_actions_with_backticks_and_fences():
    assert calls(REACT_TWO, "react") == [("lookup", {"term": "Lyon"}), ("lookup", {"term": "Paris"})]


def test_react_empty_input_means_no_arguments():
    assert calls("Action: list_files\nAction Input:\nObservation:", "react") == [("list_files", {})]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("Action: search\nThought: hmm", "Action Input"),
        ("Action: search\nAction Input: population of Lyon", "JSON object"),
        ('Action: search\nAction Input: {"query": "population', "cut off"),
        ("Action: \nAction Input: {}", "without a tool name"),
    ],
)
def test_react_malformed_actions_become_errors(text, fragment):
    result = parse_tool_calls(text, "react")
    assert result.calls == [] and len(result.errors) == 1 and fragment in result.errors[0]


def test_final_answer_is_not_a_react_call():
    assert parse_tool_calls("Thought: done\nFinal Answer: 42", "react").calls == []


# -- robustness: no model output makes a parser raise -----------------------------------------
ALL_SAMPLES = [QWEN25, QWEN3_THINK, QWEN_TWO, LLAMA31, LLAMA32_TYPE, OPENAI_TOOL_CALLS, FENCED, JSON_LIST, REACT, REACT_TWO]


@pytest.mark.parametrize("style", sorted(PARSERS))
def test_every_truncation_and_random_noise_parses_without_raising(style):
    rng = random.Random(0)
    alphabet = '{}[]":,<>/ \n`\\abcdnmeAction Input:tool_call0123'
    texts = [s[:i] for s in ALL_SAMPLES for i in range(len(s) + 1)]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80))) for _ in range(500)]
    for text in texts:
        result = parse_tool_calls(text, style)
        assert all(isinstance(c, ToolCall) for c in result.calls)
        assert all(e.startswith("invalid tool call") for e in result.errors)


def test_a_truncated_call_is_reported_not_silently_dropped():
    for text, style in [(QWEN25, "hermes"), (LLAMA31, "openai_json"), (REACT, "react")]:
        cut = text[: text.index("arguments" if "arguments" in text else "parameters" if "parameters" in text else "query") + 14]
        result = parse_tool_calls(cut, style)
        assert result.errors and not result.calls, (style, cut)


# -- example calls in running text -----------------------------------------------------------------
@pytest.mark.parametrize("style", sorted(PARSERS))
@pytest.mark.parametrize("end, after", [(". ", "Answer briefly."), ("; ", "tools: a(x), b(y)."), (".", "")])
def test_an_example_call_in_a_sentence_reads_back_as_that_call(style, end, after):
    args = {"query": "...", "k": 2}
    text = f"Question: who? Call a tool as{call_example('search', args, style, end=end)}{after}"
    result = parse_tool_calls(text, style)
    assert result.calls == [ToolCall(name="search", arguments=args)] and not result.errors


def test_a_one_line_example_stays_in_the_sentence_and_a_react_one_gets_its_own_lines():
    assert call_example("search", {"query": "..."}, end=". ") == call_example("search", {"query": "..."}, "hermes", end=". ") == (
        ' <tool_call>{"name": "search", "arguments": {"query": "..."}}</tool_call>. ')
    assert call_example("search", {"query": "..."}, "openai_json", end="; ") == ' {"name": "search", "parameters": {"query": "..."}}; '
    assert call_example("search", {"query": "..."}, "react", end=". ") == ':\nAction: search\nAction Input: {"query": "..."}\n'


# -- registry and style detection ----------------------------------------------------------------
def test_unknown_style_is_a_clear_value_error():
    with pytest.raises(ValueError, match="unknown tool-call style 'xml'.*hermes"):
        parse_tool_calls("x", "xml")


def test_register_parser_adds_a_style():
    from turngym.tools.parsers import ParseResult

    register_parser("upper_test", lambda text: ParseResult(calls=[ToolCall(name=text.upper())]))
    try:
        assert calls("go", "upper_test") == [("GO", {})]
    finally:
        PARSERS.pop("upper_test")


class _Tok:
    def __init__(self, chat_template=None, name_or_path=""):
        self.chat_template, self.name_or_path = chat_template, name_or_path


QWEN_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\\n# Tools\\n<tools>{% for tool in tools %}{{ tool | tojson }}{% endfor %}</tools>\\n"
    "For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags"
)
LLAMA31_TEMPLATE = (
    '{%- if builtin_tools is defined or tools is not none %}{{- "Environment: ipython\\n" }}{%- endif %}'
    '{{- \'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.\' }}'
)


@pytest.mark.parametrize(
    "tokenizer, model_name, expected",
    [
        (_Tok(QWEN_TEMPLATE), None, "hermes"),
        (_Tok(LLAMA31_TEMPLATE, "meta-llama/Llama-3.1-8B-Instruct"), None, "openai_json"),
        (_Tok("{% for m in messages %}{{ m.content }}{% endfor %}", "HuggingFaceTB/SmolLM2-135M-Instruct"), None, "hermes"),
        (None, "meta-llama/Llama-3.2-1B-Instruct", "openai_json"),
        (None, "gpt-4o-mini", "openai_json"),
        (_Tok("... Thought: ... Action: ... Action Input: ..."), None, "react"),
        (None, "some/unknown-model", "hermes"),
        (_Tok({"default": QWEN_TEMPLATE, "tool_use": "x"}), None, "hermes"),
    ],
)
def test_detect_style_from_template_then_name(tokenizer, model_name, expected):
    assert detect_style(tokenizer, model_name) == expected


def test_template_evidence_beats_the_model_name():
    # A Llama-named fine-tune trained on the Hermes template writes <tool_call> tags.
    assert detect_style(_Tok(QWEN_TEMPLATE, "someone/llama-3-hermes-ft")) == "hermes"


def test_register_style_rule_takes_precedence():
    register_style_rule(r"(?i)mymodel", "react", on="model")
    try:
        assert detect_style(None, "org/MyModel-7B") == "react"
    finally:
        STYLE_RULES.pop(0)


# -- replies that Python's JSON decoder refuses for their shape -------------------------------------
@pytest.mark.parametrize("style", ["hermes", "openai_json", "react"])
@pytest.mark.parametrize(("body", "error"), [
    ("[" * 100_000, "nested more than 100 levels deep"),
    ('{"a": ' * 150 + "1" + "}" * 150, "nested more than 100 levels deep"),
    ('{"name": "x", "arguments": {"n": ' + "9" * 5000 + "}}", "a value in the JSON cannot be read"),
])
def test_json_too_deep_or_too_long_is_an_error_not_a_crash(style, body, error):
    text = {"hermes": f"<tool_call>{body}</tool_call>", "openai_json": body,
            "react": f"Action: x\nAction Input: {body}"}[style]
    result = parse_tool_calls(text, style)
    assert result.calls == [] and len(result.errors) == 1 and error in result.errors[0]


def test_a_megabyte_of_brackets_is_read_in_linear_time():
    start = time.perf_counter()
    assert parse_tool_calls("[" * (1 << 20), "openai_json").errors
    assert time.perf_counter() - start < 2.0  # a retry per bracket, each descending ~1000 levels: hours


def test_arguments_nested_within_the_bound_still_parse():
    nested = "[" * 50 + "]" * 50
    result = parse_tool_calls(f'<tool_call>{{"name": "x", "arguments": {{"a": {nested}, "s": "[[[[\\\\\\""}}}}</tool_call>')
    assert result.ok and result.calls[0].arguments["s"] == '[[[[\\"'


def test_tools_help_lists_every_tool_with_its_argument_names_and_an_example_each_style_parses():
    from pydantic import BaseModel

    from turngym.tools.base import Tool
    from turngym.tools.parsers import PARSERS, parse_tool_calls, tools_help

    class Find(BaseModel):
        query: str
        k: int | None = None

    class Done(BaseModel):
        text: str

    tools = [Tool("find", "find things", Find), Tool("done", "finish", Done)]
    for style in PARSERS:
        help_line = tools_help(tools, ("find", {"query": "x"}), style)
        assert help_line.startswith("Call a tool as") and help_line.endswith("tools: find(query, k), done(text).")
        calls = parse_tool_calls(help_line.rsplit("tools:", 1)[0], style).calls
        assert [(c.name, c.arguments) for c in calls] == [("find", {"query": "x"})], style
