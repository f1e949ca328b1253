"""The OpenAI-compatible client against a real `turngym serve` server, and its retry logic."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading

import httpx
import pytest

from turngym.agents.openai_http import EndpointError, OpenAIConfig, OpenAIPolicy, backoff_delay
from turngym.agents.policy import Completion, SamplingParams
from turngym.agents.serve import make_server
from turngym.tools.parsers import parse_tool_calls

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "move",
            "description": "Move the player one cell.",
            "parameters": {"type": "object", "properties": {"direction": {"type": "string"}}},
        },
    }
]
MESSAGES = [{"role": "system", "content": "Solve it."}, {"role": "user", "content": "Where next?"}]


class Recorder:
    """Wraps a policy, recording every batch the server sends it."""

    def __init__(self, policy) -> None:
        self.policy = policy
        self.tokenizer = policy.tokenizer
        self.batches: list[int] = []

    def generate(self, prompts, sampling):
        self.batches.append(len(prompts))
        return self.policy.generate(prompts, sampling)


class Canned:
    """A test double that always replies with one fixed text."""

    def __init__(self, tokenizer, text: str) -> None:
        self.tokenizer = tokenizer
        self.text = text

    def generate(self, prompts, sampling):
        ids = self.tokenizer.encode(self.text, add_special_tokens=False)
        return [Completion(text=self.text, token_ids=ids, logprobs=[-0.5] * len(ids)) for _ in prompts]


def start(policy, name="tiny"):
    server = make_server(policy, "127.0.0.1", 0, model_name=name)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


def stop(server) -> None:
    server.shutdown()
    server.server_close()
    server.service.close()


@pytest.fixture(scope="module")
def served(tiny):
    recorder = Recorder(tiny)
    server, url = start(recorder)
    yield recorder, url
    stop(server)


def test_models_route_and_unknown_routes(served):
    _, url = served
    listing = httpx.get(f"{url}/models").json()
    assert listing["object"] == "list" and [m["id"] for m in listing["data"]] == ["tiny"]
    missing = httpx.get(f"{url}/nothing")
    assert missing.status_code == 404 and "no route" in missing.json()["error"]["message"]


def test_client_gets_exactly_what_the_local_policy_generates(served, tiny):
    recorder, url = served
    sampling = SamplingParams(temperature=1.0, max_tokens=16, seeds=[1, 2, 3])
    prompts = [MESSAGES, [{"role": "user", "content": "hi"}], [{"role": "user", "content": "go left"}]]
    with OpenAIPolicy(base_url=url, model="tiny", logprobs=True, render_tool_calls=False) as client:
        remote = client.generate(prompts, sampling)
    local = tiny.generate(prompts, sampling)
    for r, want in zip(remote, local):
        assert r.token_ids == want.token_ids and len(r.token_ids) > 0
        assert r.logprobs == pytest.approx(want.logprobs, abs=1e-6)
        assert r.finish_reason == want.finish_reason
    assert sum(recorder.batches[-3:]) >= 1


def test_concurrent_requests_are_answered_in_order(served, tiny):
    recorder, url = served
    seeds = list(range(40, 48))
    prompts = [[{"role": "user", "content": f"task {i}"}] for i in range(8)]
    sampling = SamplingParams(temperature=1.0, max_tokens=8, seeds=seeds)
    recorder.batches.clear()
    with OpenAIPolicy(base_url=url, max_concurrency=4, logprobs=True) as client:
        remote = client.generate(prompts, sampling)
    assert [c.token_ids for c in remote] == [c.token_ids for c in tiny.generate(prompts, sampling)]
    assert sum(recorder.batches) == 8  # every request reached the model once (maybe batched)


def test_tools_are_rendered_through_the_chat_template(served, tiny):
    _, url = served
    body = {"model": "tiny", "messages": MESSAGES, "tools": TOOLS, "max_tokens": 2, "seed": 0}
    with_tools = httpx.post(f"{url}/chat/completions", json=body).json()
    without = httpx.post(f"{url}/chat/completions", json={**body, "tools": []}).json()
    expected = tiny.tokenizer.apply_chat_template(MESSAGES, tools=TOOLS, add_generation_prompt=True, return_dict=False)
    assert with_tools["usage"]["prompt_tokens"] == len(expected)
    assert without["usage"]["prompt_tokens"] < len(expected)
    assert with_tools["object"] == "chat.completion" and with_tools["choices"][0]["message"]["role"] == "assistant"


def test_bad_requests_get_400_and_the_client_does_not_retry(served):
    _, url = served
    for body, fragment in [
        ({"messages": []}, "messages"),
        ({"messages": MESSAGES, "stream": True}, "stream"),
        ({"messages": MESSAGES, "n": 2}, "n must be 1"),
        ({"messages": MESSAGES, "temperature": "hot"}, "invalid sampling"),
        ({"messages": MESSAGES, "max_tokens": -3}, "max_tokens"),
    ]:
        reply = httpx.post(f"{url}/chat/completions", json=body)
        assert reply.status_code == 400 and fragment in reply.json()["error"]["message"]
    assert httpx.post(f"{url}/chat/completions", content=b"{not json").status_code == 400
    sleeps: list[float] = []
    with OpenAIPolicy(base_url=url, sleep=sleeps.append) as client:
        with pytest.raises(EndpointError, match="refused the request .HTTP 400: max_tokens must be a positive"):
            client.generate([MESSAGES], SamplingParams(max_tokens=0))
    assert sleeps == []


def test_tool_calls_come_back_structured_and_round_trip_to_hermes_text(tiny):
    reply = 'Let me move.\n<tool_call>\n{"name": "move", "arguments": {"direction": "up"}}\n</tool_call>'
    server, url = start(Canned(tiny.tokenizer, reply))
    try:
        raw = httpx.post(f"{url}/chat/completions", json={"messages": MESSAGES, "tools": TOOLS, "logprobs": True}).json()
        choice = raw["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        assert choice["message"]["content"] == "Let me move."
        [call] = choice["message"]["tool_calls"]
        assert call["type"] == "function" and call["function"]["name"] == "move"
        assert json.loads(call["function"]["arguments"]) == {"direction": "up"}
        assert len(choice["logprobs"]["content"]) == len(tiny.tokenizer.encode(reply, add_special_tokens=False))
        with OpenAIPolicy(base_url=url, tools=TOOLS, render_tool_calls=True) as client:
            [completion] = client.generate([MESSAGES], SamplingParams())
        [returned] = completion.tool_calls
        assert returned["function"] == {"name": "move", "arguments": '{"direction": "up"}'}
        parsed = parse_tool_calls(completion.text)
        assert parsed.ok and parsed.calls[0].name == "move" and parsed.calls[0].arguments == {"direction": "up"}
        assert completion.text.startswith("Let me move.")
    finally:
        stop(server)


def test_by_default_calls_stay_structured_and_the_agent_renders_them_once(tiny):
    from turngym.agents.agent import Agent

    reply = 'Let me move.\n<tool_call>\n{"name": "move", "arguments": {"direction": "up"}}\n</tool_call>'
    server, url = start(Canned(tiny.tokenizer, reply))
    try:
        with OpenAIPolicy(base_url=url) as client:
            [completion] = client.generate([MESSAGES], SamplingParams(), tools=[TOOLS])
        assert completion.text == "Let me move." and len(completion.tool_calls) == 1
        action = Agent.action_text(completion)
        assert action.count("<tool_call>") == 1 and parse_tool_calls(action).calls[0].arguments == {"direction": "up"}
    finally:
        stop(server)


def test_tools_go_per_prompt_and_none_means_plain_text():
    bodies: list[dict] = []

    def handler(request):
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json=ok_reply())

    client = OpenAIPolicy(transport=httpx.MockTransport(handler), max_concurrency=1)
    client.generate([MESSAGES, MESSAGES], SamplingParams(), tools=[TOOLS, []])
    client.generate([MESSAGES], SamplingParams())
    assert bodies[0]["tools"] == TOOLS and "tools" not in bodies[1] and "tools" not in bodies[2]
    with pytest.raises(ValueError, match="1 tool lists for 2 prompts"):
        client.generate([MESSAGES, MESSAGES], SamplingParams(), tools=[TOOLS])


def test_spec_parsing():
    from turngym.agents.openai_http import parse_openai_spec

    config = parse_openai_spec("https://api.example.test/v1#gpt-x")
    assert (config.base_url, config.model) == ("https://api.example.test/v1", "gpt-x")
    for bad in ["api.example.test/v1#m", "http://h/v1", "http://h/v1#  "]:
        with pytest.raises(ValueError, match="openai:http://HOST:PORT/v1#MODEL"):
            parse_openai_spec(bad)


def test_malformed_tool_calls_stay_in_the_content(tiny):
    reply = '<tool_call>{"name": "move", "arguments": {"direction": </tool_call>'
    server, url = start(Canned(tiny.tokenizer, reply))
    try:
        with OpenAIPolicy(base_url=url) as client:
            [completion] = client.generate([MESSAGES], SamplingParams())
        assert completion.text == reply and completion.tool_calls == []
    finally:
        stop(server)


# -- retries, backoff, concurrency, key --------------------------------------------------------


def ok_reply(text: str = "done") -> dict:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}


def test_backoff_delay_is_capped_full_jitter():
    rng = random.Random(0)
    for attempt in range(8):
        delays = [backoff_delay(attempt, 0.5, 4.0, rng) for _ in range(200)]
        cap = min(4.0, 0.5 * 2**attempt)
        assert all(0 <= d <= cap for d in delays)
        assert max(delays) > 0.8 * cap  # the whole window is used


def test_retries_429_5xx_and_connection_errors_then_succeeds():
    answers = iter(["503", "429", "connect", "500", "ok"])
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        answer = next(answers)
        if answer == "connect":
            raise httpx.ConnectError("connection refused", request=request)
        if answer == "429":
            return httpx.Response(429, headers={"Retry-After": "3"}, json={"error": {"message": "slow down"}})
        if answer == "ok":
            return httpx.Response(200, json=ok_reply())
        return httpx.Response(int(answer), text="busy")

    sleeps: list[float] = []
    client = OpenAIPolicy(
        OpenAIConfig(backoff_s=1.0, backoff_max_s=10.0, max_retries=5),
        transport=httpx.MockTransport(handler),
        sleep=sleeps.append,
    )
    [completion] = client.generate([MESSAGES], SamplingParams(max_tokens=5, seeds=[9]))
    assert completion.text == "done" and completion.finish_reason == "stop"
    assert len(seen) == 5 and all(body == seen[0] for body in seen)  # the same request resent
    assert seen[0]["seed"] == 9 and seen[0]["max_tokens"] == 5 and seen[0]["messages"] == MESSAGES
    assert len(sleeps) == 4
    assert 0 <= sleeps[0] <= 1.0 and 3.0 <= sleeps[1] <= 10.0  # Retry-After: 3 honoured
    assert 0 <= sleeps[2] <= 4.0 and 0 <= sleeps[3] <= 8.0  # doubling windows


def test_gives_up_after_max_retries_with_one_sentence():
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(502, text="bad gateway")

    sleeps: list[float] = []
    client = OpenAIPolicy(max_retries=2, transport=httpx.MockTransport(handler), sleep=sleeps.append)
    with pytest.raises(EndpointError) as err:
        client.generate([MESSAGES], SamplingParams())
    assert len(calls) == 3 and len(sleeps) == 2
    assert "failed after 3 attempts (HTTP 502: bad gateway)" in str(err.value)


def test_a_real_refused_connection_is_retried():
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps: list[float] = []
    client = OpenAIPolicy(base_url=f"http://127.0.0.1:{port}/v1", max_retries=2, sleep=sleeps.append, timeout_s=5)
    with pytest.raises(EndpointError, match="failed after 3 attempts .ConnectError"):
        client.generate([MESSAGES], SamplingParams())
    assert len(sleeps) == 2


def test_concurrency_is_limited_and_the_key_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("TURNGYM_TEST_KEY", "sk-test-123")
    limit = 3
    lock = threading.Lock()
    in_flight = {"now": 0, "max": 0}
    barrier = threading.Barrier(limit, timeout=30)  # passes only when `limit` requests overlap
    auth: list[str] = []

    def handler(request):
        with lock:
            in_flight["now"] += 1
            in_flight["max"] = max(in_flight["max"], in_flight["now"])
            auth.append(request.headers.get("Authorization", ""))
        barrier.wait()
        with lock:
            in_flight["now"] -= 1
        return httpx.Response(200, json=ok_reply(json.loads(request.content)["messages"][0]["content"]))

    client = OpenAIPolicy(max_concurrency=limit, api_key_env="TURNGYM_TEST_KEY", transport=httpx.MockTransport(handler))
    prompts = [[{"role": "user", "content": str(i)}] for i in range(9)]
    completions = client.generate(prompts, SamplingParams())
    assert [c.text for c in completions] == [str(i) for i in range(9)]
    assert in_flight["max"] == limit
    assert auth == ["Bearer sk-test-123"] * 9


def test_token_id_prompts_are_refused():
    client = OpenAIPolicy(transport=httpx.MockTransport(lambda r: httpx.Response(200, json=ok_reply())))
    with pytest.raises(TypeError, match="chat-message prompts"):
        client.generate([[1, 2, 3]], SamplingParams())


# -- the command ------------------------------------------------------------------------------


def test_turngym_serve_runs_as_a_process():
    proc = subprocess.Popen(
        [sys.executable, "-m", "turngym", "serve", "tiny:seed=0", "--port", "0", "--name", "tiny-cli"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        line = ""
        for line in proc.stderr:  # the line is logged once the socket is listening
            if "serving" in line:
                break
        assert "serving tiny:seed=0 at http://127.0.0.1:" in line, line
        url = line.split(" at ")[1].split()[0]
        assert [m["id"] for m in httpx.get(f"{url}/models").json()["data"]] == ["tiny-cli"]
        with OpenAIPolicy(base_url=url, logprobs=True) as client:
            [completion] = client.generate([MESSAGES], SamplingParams(max_tokens=5, seeds=[1]))
        assert 0 < len(completion.token_ids) == len(completion.logprobs) <= 5
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_turngym_serve_unknown_model_is_one_sentence(capsys):
    from turngym.cli import main

    assert main(["serve", "no-such-model", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("turngym: error: unknown model 'no-such-model'") and err.count("\n") == 1
