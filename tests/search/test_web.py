"""The web search backend against a real HTTP server on 127.0.0.1: key header, retries, on-disk cache."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from turngym.envs.search.env import SearchEnv
from turngym.envs.search.policies import tool_call
from turngym.envs.search.retrieval import SearchBackendError, make_retriever
from turngym.envs.tasks import Task, TaskSuite


class SearchAPI:
    """A tiny search API: fails the first ``fail_first`` requests with 503, then answers."""

    def __init__(self, fail_first=0, always_status=None):
        self.fail_first, self.always_status = fail_first, always_status
        self.requests = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                query = parse_qs(urlparse(self.path).query)
                api.requests.append({"q": query.get("q", [""])[0], "k": query.get("k", [""])[0], "auth": self.headers.get("Authorization")})
                status = api.always_status or (503 if len(api.requests) <= api.fail_first else 200)
                body = b"{}"
                if status == 200:
                    k = int(query["k"][0])
                    results = [{"url": f"https://example.org/{i}", "title": f"Result {i} for {query['q'][0]}", "snippet": f"Snippet {i}: the answer is Paris."} for i in range(k)]
                    body = json.dumps({"results": results}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/search"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_web_backend_retries_then_caches_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_SEARCH_KEY", "s3cret")
    options = {"api_key_env": "MY_SEARCH_KEY", "retries": 3, "backoff_s": 0.01, "cache_dir": str(tmp_path)}
    with SearchAPI(fail_first=2) as api:
        web = make_retriever("web", None, {**options, "url": api.url}, shared=False)
        hits = web.search("capital of France", 3)
        assert [h.doc.title for h in hits] == [f"Result {i} for capital of France" for i in range(3)]
        assert len(api.requests) == 3 and web.requests_made == 3  # two 503s, then success
        assert api.requests[-1] == {"q": "capital of France", "k": "3", "auth": "Bearer s3cret"}
        assert web.get(hits[0].doc.id).text == "Snippet 0: the answer is Paris."
        # the same query again, and from a fresh instance: served from the on-disk cache
        assert [h.doc.id for h in web.search("capital of France", 3)] == [h.doc.id for h in hits]
        fresh = make_retriever("web", None, {**options, "url": api.url}, shared=False)
        assert [h.doc.id for h in fresh.search("capital of France", 3)] == [h.doc.id for h in hits]
        assert len(api.requests) == 3 and fresh.requests_made == 0
        fresh.search("another query", 2)
        assert len(api.requests) == 4


def test_web_backend_gives_up_after_retries(tmp_path):
    with SearchAPI(always_status=500) as api:
        web = make_retriever("web", None, {"url": api.url, "retries": 2, "backoff_s": 0.01, "cache_dir": str(tmp_path)}, shared=False)
        with pytest.raises(SearchBackendError, match="failed after 3 attempts"):
            web.search("anything", 2)
        assert len(api.requests) == 3
    with SearchAPI(always_status=403) as api:  # a client error is not retried
        web = make_retriever("web", None, {"url": api.url, "retries": 2, "backoff_s": 0.01, "cache_dir": str(tmp_path)}, shared=False)
        with pytest.raises(SearchBackendError, match="HTTP 403"):
            web.search("anything", 2)
        assert len(api.requests) == 1


def test_search_env_over_the_web_backend(tmp_path):
    suite = TaskSuite("web", [Task(id="q1", prompt="What is the capital of France?", answer=["Paris"])])
    with SearchAPI() as api:
        env = SearchEnv(suite=suite, retriever="web", retriever_options={"url": api.url, "cache_dir": str(tmp_path)})
        _, info = env.reset(options={"task": "q1"})
        obs, _, _, _, info = env.step(tool_call("search", query="capital of France", k=2))
        assert "Result 0 for capital of France" in obs and info["stratum"] == 1
        doc_id = info["anchor"][1][0]
        obs, _, _, _, info = env.step(tool_call("open", doc_id=doc_id))
        assert "the answer is Paris" in obs and info["action_valid"]
        _, reward, terminated, _, info = env.step(tool_call("answer", text="Paris"))
        assert terminated and reward == 1.0 and info["success"]
    with SearchAPI(always_status=502) as api:  # a dead backend is an observation, not a crash
        env = SearchEnv(suite=suite, retriever="web", retriever_options={"url": api.url, "retries": 0, "cache_dir": str(tmp_path)})
        env.reset(options={"task": "q1"})
        obs, reward, terminated, _, info = env.step(tool_call("search", query="capital of France"))
        assert "search failed" in obs and info["action_valid"] and not terminated and info["anchor"][1] == ()
