"""``openai:URL#MODEL`` as an evaluation policy, and clients no one here wrote against ``turngym serve``.

The endpoint under evaluation is a real ``turngym serve`` HTTP server on the loopback address;
the client side is turngym's own :class:`OpenAIPolicy` (through ``turngym eval``) and the
official ``openai`` Python library.
"""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from turngym.agents.policy import Completion, SamplingParams
from turngym.agents.serve import make_server
from turngym.cli import main
from turngym.envs import make

openai = pytest.importorskip("openai", reason="the official client is in the [dev] extra")

MOVE_DOWN = '<tool_call>\n{"name": "move", "arguments": {"direction": "down"}}\n</tool_call>'
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


class Canned:
    """A test double that always replies with one fixed text."""

    def __init__(self, tokenizer, text: str) -> None:
        self.tokenizer = tokenizer
        self.text = text

    def generate(self, prompts, sampling):
        ids = self.tokenizer.encode(self.text, add_special_tokens=False)
        return [Completion(text=self.text, token_ids=ids, logprobs=[-0.5] * len(ids)) for _ in prompts]


class Served:
    """``turngym serve`` in a thread, recording every request body it answers."""

    def __init__(self, policy, name: str) -> None:
        self.server = make_server(policy, "127.0.0.1", 0, model_name=name)
        self.bodies: list[dict] = []
        answer = self.server.service.chat_completion

        def recording(body):
            self.bodies.append(json.loads(json.dumps(body)))
            return answer(body)

        self.server.service.chat_completion = recording
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.server.service.close()


@pytest.fixture
def mover(tiny):
    served = Served(Canned(tiny.tokenizer, MOVE_DOWN), "mover")
    yield served
    served.close()


@pytest.fixture(scope="module")
def served_tiny(tiny):
    served = Served(tiny, "tiny")
    yield served
    served.close()


# -- turngym eval --policy openai:URL#MODEL -----------------------------------------------------


def test_eval_sends_the_envs_tools_and_maps_native_calls_back(mover, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["eval", "--env", "turngym/FrozenLake-v0", "--policy", f"openai:{mover.url}#mover",
                 "--episodes", "2", "--max-turns", "2", "--out", str(out), "--no-report", "--quiet"])
    assert code == 0, capsys.readouterr().err
    trajectories = [json.loads(line) for line in (out / "trajectories.jsonl").read_text().splitlines()]
    turns = [turn for t in trajectories for turn in t["turns"]]
    assert len(trajectories) == 2 and turns
    # the structured call came back as the environment's own call format, exactly once
    assert all(turn["action_valid"] and turn["response_text"].count("<tool_call>") == 1 for turn in turns)
    env = make("turngym/FrozenLake-v0")
    schemas = [tool.schema() for tool in env.unwrapped.tools]
    env.close()
    assert mover.bodies and all(body["tools"] == schemas for body in mover.bodies)
    assert all(body["model"] == "mover" for body in mover.bodies)
    systems = [m["content"] for body in mover.bodies for m in body["messages"] if m["role"] == "system"]
    assert systems and not any("<tools>" in text for text in systems)  # described once, as tools=
    later = [body["messages"] for body in mover.bodies if len(body["messages"]) > 2]
    assert later, "with --max-turns 2 some request carries a past turn"
    for messages in later:
        assistant, answer = messages[-2], messages[-1]
        assert assistant["role"] == "assistant" and "<tool_call>" not in (assistant["content"] or "")
        [call] = assistant["tool_calls"]
        assert call["function"]["name"] == "move" and json.loads(call["function"]["arguments"]) == {"direction": "down"}
        assert answer["role"] == "tool" and answer["tool_call_id"] == call["id"]


def test_eval_without_tools_sends_plain_text(tiny, tmp_path):
    served = Served(Canned(tiny.tokenizer, "<action>down</action>"), "plain")
    try:
        from turngym.agents.evaluation.policies import runner_for_spec
        from turngym.agents.evaluation.runner import WorkItem
        from turngym.agents.rollout import RolloutConfig

        runner = runner_for_spec(f"openai:{served.url}#plain", rollout=RolloutConfig(temperature=0.0, max_turns=1,
                                                                                        progress=False))
        env_id = "turngym/FrozenLake-v0"
        task = make(env_id).unwrapped.suite.split("test")[0].id
        [traj] = runner([WorkItem(env_id=env_id, task_id=task, run=0, seed=1)])
        runner.close()
        assert traj.turns[0].response_text == "<action>down</action>" and traj.turns[0].action_valid
    finally:
        served.close()


@pytest.mark.parametrize("spec, fragment", [
    ("openai:127.0.0.1:8000/v1#m", "must look like openai:http://HOST:PORT/v1#MODEL"),
    ("openai:http://127.0.0.1:8000/v1", "must look like openai:http://HOST:PORT/v1#MODEL"),
    ("vllm:smollm2", "needs vllm and a CUDA GPU"),
])
def test_bad_or_unavailable_specs_are_one_sentence(spec, fragment, tmp_path, capsys):
    if spec.startswith("vllm:"):
        from turngym.agents.vllm_policy import vllm_available

        if vllm_available():
            pytest.skip("vllm is installed here")
    code = main(["eval", "--env", "turngym/FrozenLake-v0", "--policy", spec, "--episodes", "1",
                 "--out", str(tmp_path / "e"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and err.count("\n") == 1, err


# -- the official openai client against turngym serve -------------------------------------------


def test_official_client_gets_what_the_local_model_generates(served_tiny, tiny):
    client = openai.OpenAI(base_url=served_tiny.url, api_key="unused", max_retries=0, timeout=60)
    reply = client.chat.completions.create(
        model="tiny", messages=MESSAGES, tools=TOOLS, temperature=1.0, max_tokens=12, seed=7, logprobs=True,
        extra_body={"return_token_ids": True},
    )
    [choice] = reply.choices
    ids = tiny.tokenizer.apply_chat_template(MESSAGES, tools=TOOLS, add_generation_prompt=True, return_dict=False)
    [want] = tiny.generate([list(ids)], SamplingParams(temperature=1.0, max_tokens=12, seeds=[7]))
    assert choice.model_extra["token_ids"] == want.token_ids  # a vLLM-style extra field
    assert [t.logprob for t in choice.logprobs.content] == pytest.approx(want.logprobs, abs=1e-6)
    assert reply.model == "tiny" and reply.object == "chat.completion"
    assert reply.usage.prompt_tokens == len(ids) and reply.usage.completion_tokens == len(want.token_ids)
    assert [m.id for m in client.models.list()] == ["tiny"]


def test_official_client_tool_call_round_trip(mover):
    client = openai.OpenAI(base_url=mover.url, api_key="unused", max_retries=0, timeout=60)
    first = client.chat.completions.create(model="mover", messages=MESSAGES, tools=TOOLS)
    [choice] = first.choices
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "move"
    assert json.loads(call.function.arguments) == {"direction": "down"}
    # the conversation continues the way the client's users write it: the assistant message
    # as returned, then the tool's answer to that call id
    follow_up = [*MESSAGES, choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "moved down"}]
    second = client.chat.completions.create(model="mover", messages=follow_up, tools=TOOLS)
    assert second.choices[0].message.tool_calls[0].function.name == "move"
    rendered = mover.bodies[-1]["messages"]
    assert rendered[-1] == {"role": "tool", "tool_call_id": call.id, "content": "moved down"}


def test_official_client_sees_openai_errors(served_tiny):
    client = openai.OpenAI(base_url=served_tiny.url, api_key="unused", max_retries=0, timeout=60)
    with pytest.raises(openai.BadRequestError, match="n must be 1"):
        client.chat.completions.create(model="tiny", messages=MESSAGES, n=2)
    with pytest.raises(openai.BadRequestError, match="stream is not supported"):
        client.chat.completions.create(model="tiny", messages=MESSAGES, stream=True)
    assert httpx.get(served_tiny.url.removesuffix("/v1") + "/health").json() == {"status": "ok"}


# -- a third-party server: llama.cpp's, serving the embedded SmolLM2 GGUF -------------------------


@pytest.mark.slow
def test_eval_against_llama_cpp_server_with_the_embedded_gguf(tmp_path, capsys):
    """Not run in CI: llama-cpp-python has no prebuilt CPU wheel on PyPI and its source build
    takes longer than CI affords (install it with the [llamacpp] extra to run this)."""
    pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server] (extra [llamacpp])")
    import socket
    import subprocess
    import sys
    import time

    from turngym.agents.models import _gguf_path

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(_gguf_path()), "--host", "127.0.0.1",
         "--port", str(port), "--model_alias", "smollm2", "--chat_format", "chatml-function-calling", "--n_ctx", "4096"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:  # poll the model listing until the server answers, within a deadline
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "llama.cpp's server did not come up"
            time.sleep(0.5)
        out = tmp_path / "eval"
        code = main(["eval", "--env", "turngym/FrozenLake-v0", "--policy", f"openai:{url}#smollm2", "--episodes", "2",
                     "--max-turns", "2", "--max-tokens", "48", "--out", str(out), "--no-report", "--quiet"])
        assert code == 0, capsys.readouterr().err
        trajectories = [json.loads(line) for line in (out / "trajectories.jsonl").read_text().splitlines()]
        assert len(trajectories) == 2 and all(t["status"] != "error" and t["turns"] for t in trajectories)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_every_structured_call_gets_its_tool_message():
    from turngym.agents.agent import Agent, EpisodeMemory, Exchange

    calls = [{"type": "function", "function": {"name": "search", "arguments": json.dumps({"query": q})}} for q in "ab"]
    memory = EpisodeMemory(instructions="Answer.", tools=TOOLS, task="Who?")
    memory.history.append(Exchange(action="", observation="results for a and b", tool_output=True, structured_calls=calls))
    messages = Agent(None, native_tools=True).build(memory).messages
    assert messages[0] == {"role": "system", "content": "Answer."}  # no schemas: they go as tools=
    assistant, first, second = messages[2:]
    assert [c["id"] for c in assistant["tool_calls"]] == [first["tool_call_id"], second["tool_call_id"]]
    assert first["content"] == "results for a and b" and second["role"] == "tool"
