"""Benchmark of the search environment on the full packaged corpus (13,838 passages).

    python bench/search.py [--dense] [--out bench/results/search.md]

Measures, in one run:
- BM25 index build time and peak memory (a fresh subprocess each, against a subprocess that
  only loads the corpus), index size on disk, and a memory-mapped reload;
- search latency p50/p95 of our BM25 path (``get_scores`` + ``argpartition``) side by side with
  bm25s's own ``retrieve`` API as the baseline, over the 500 test questions;
- the latency of a whole ``env.step`` with a search tool call (parse, retrieve, format);
- episodes/s with the scripted oracle and random policies;
- with ``--dense``: embedding build time and dense/hybrid search latency.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from turngym.envs.search.corpus import load_corpus
from turngym.envs.search.retrieval import make_retriever
corpus = load_corpus()
t1 = time.perf_counter()
rss_corpus = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = {"corpus_load_s": t1 - t0, "rss_corpus_mib": rss_corpus / 1024}
if sys.argv[1] != "corpus":
    r = make_retriever(sys.argv[1], corpus, {"cache_dir": sys.argv[2]}, shared=False)
    out["retriever_s"] = time.perf_counter() - t1
    out["built"] = r.built
    out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def child(kind: str, cache: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, kind, cache], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def percentiles(samples_s: list[float]) -> tuple[float, float]:
    ms = np.array(samples_s) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def load_average() -> str:
    """The 1-minute load average (other jobs on the machine), or "?" where /proc has none."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def du_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dense", action="store_true", help="also benchmark dense and hybrid retrieval")
    parser.add_argument("--dense-docs", type=int, default=0, help="embed only the first N passages (0: all) — for a quick rate on a busy machine")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the 500 questions")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "search.md")
    args = parser.parse_args()

    import bm25s

    import turngym
    from turngym.agents.rollout import RolloutConfig, RolloutEngine
    from turngym.agents.scripted import EpisodePolicy, per_episode
    from turngym.envs import load_suite
    from turngym.envs.search.corpus import load_corpus
    from turngym.envs.search.policies import OracleSearchPolicy, RandomSearchPolicy, tool_call
    from turngym.envs.search.retrieval import make_retriever

    rows: list[tuple[str, str]] = []
    cache = tempfile.mkdtemp(prefix="turngym-bench-search-")

    # -- build and load --------------------------------------------------------------------
    base = child("corpus", cache)
    cold = child("bm25", cache)
    warm = child("bm25", cache)
    assert cold["built"] and not warm["built"]
    corpus = load_corpus()
    index_dir = next(Path(cache).glob("*/bm25-*"))
    rows += [
        ("corpus", f"{len(corpus)} passages, load {base['corpus_load_s'] * 1e3:.0f} ms (incl. imports), peak RSS {base['rss_corpus_mib']:.0f} MiB"),
        ("BM25 index build (cold)", f"{cold['retriever_s']:.2f} s, peak RSS {cold['rss_mib']:.0f} MiB (+{cold['rss_mib'] - base['rss_corpus_mib']:.0f} MiB over the corpus alone)"),
        ("BM25 index on disk", f"{du_mib(index_dir):.1f} MiB"),
        ("BM25 index load (cached, mmap)", f"{warm['retriever_s'] * 1e3:.0f} ms, peak RSS {warm['rss_mib']:.0f} MiB (+{warm['rss_mib'] - base['rss_corpus_mib']:.0f} MiB)"),
    ]

    # -- search latency: ours vs bm25s.retrieve ---------------------------------------------
    bm25 = make_retriever("bm25", corpus, {"cache_dir": cache})
    questions = [t.prompt for t in load_suite("search-multihop").split("test")]
    for q in questions[:20]:
        bm25.search(q, 5)
    ours, theirs = [], []
    for _ in range(args.repeats):
        for q in questions:
            t0 = time.perf_counter()
            bm25.search(q, 5)
            t1 = time.perf_counter()
            tokens = bm25.query_tokens(q)
            bm25.model.retrieve([tokens], k=5, show_progress=False, n_threads=1)
            t2 = time.perf_counter()
            ours.append(t1 - t0)
            theirs.append(t2 - t1)
    o50, o95 = percentiles(ours)
    b50, b95 = percentiles(theirs)
    rows += [
        ("BM25 search, k=5 (ours: tokenize + get_scores + argpartition)", f"p50 {o50:.3f} ms, p95 {o95:.3f} ms"),
        ("baseline: bm25s `retrieve` (tokenize excluded)", f"p50 {b50:.3f} ms, p95 {b95:.3f} ms; ours/baseline p50 = {o50 / b50:.2f}"),
    ]

    # -- a whole env step ---------------------------------------------------------------------
    env = turngym.make("turngym/Search-v0", split="test", max_turns=10_000, retriever_options={"cache_dir": cache})
    test_ids = [t.id for t in load_suite("search-multihop").split("test")]
    env.reset(options={"task": test_ids[0]})
    steps = []
    for q in questions:
        action = tool_call("search", query=q, k=5)
        t0 = time.perf_counter()
        env.step(action)
        steps.append(time.perf_counter() - t0)
    s50, s95 = percentiles(steps)
    rows.append(("env.step with a search call (parse + BM25 + format), full corpus", f"p50 {s50:.3f} ms, p95 {s95:.3f} ms (target p50 <= 5 ms)"))

    # -- episodes/s: the rollout engine, environments stepped in its own thread -------------------
    config = RolloutConfig(group_size=1, concurrency=0, progress=False)
    env_kwargs = {"split": "test", "max_turns": 12, "retriever_options": {"cache_dir": cache}}
    policies = (("oracle", lambda view: OracleSearchPolicy()), ("random", lambda view: RandomSearchPolicy(seed=view.seed)))
    for name, make_policy in policies:
        engine = RolloutEngine(EpisodePolicy(per_episode(make_policy)), "turngym/Search-v0", config=config, env_kwargs=env_kwargs)
        load = load_average()
        t0, c0 = time.perf_counter(), time.process_time()
        results = engine.run(test_ids)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        em = np.mean([t.turns[-1].info.get("em", 0.0) for t in results])
        turns = np.mean([len(t.turns) for t in results])
        # the machine is shared: CPU time is the steadier figure, the load average says how shared
        rows.append((f"episodes/s, scripted {name} policy through the rollout engine (500 test tasks, 1 thread)",
                     f"{len(results) / dt:.0f} episodes/s ({len(results) / cpu:.0f}/s of CPU time; load {load}), "
                     f"{len(results) * turns / dt:.0f} steps/s; EM {em:.3f}, {turns:.1f} turns/episode"))

    # -- dense / hybrid ------------------------------------------------------------------------
    if args.dense:
        from turngym.envs.search.corpus import Corpus

        dense_corpus = Corpus(corpus.documents[: args.dense_docs]) if args.dense_docs else corpus
        t0 = time.perf_counter()
        dense = make_retriever("dense", dense_corpus, {"cache_dir": cache})
        build_s = time.perf_counter() - t0
        rows.append((f"dense index build (all-MiniLM-L6-v2, CPU, {len(dense_corpus)} passages)", f"{build_s:.1f} s incl. model load ({len(dense_corpus) / build_s:.0f} passages/s)"))
        hybrid = make_retriever("hybrid", dense_corpus, {"cache_dir": cache})
        for name, r in (("dense", dense), ("hybrid (RRF bm25+dense, depth 50)", hybrid)):
            lat = []
            for q in questions[:200]:
                t0 = time.perf_counter()
                r.search(q, 5)
                lat.append(time.perf_counter() - t0)
            d50, d95 = percentiles(lat)
            rows.append((f"{name} search, k=5, {len(dense_corpus)} passages", f"p50 {d50:.2f} ms, p95 {d95:.2f} ms"))
        if not args.dense_docs:
            tasks = load_suite("search-multihop").split("test")
            for name, r in (("bm25", bm25), ("dense", dense), ("hybrid", hybrid)):
                hits = [len(set(t.metadata["supporting_ids"]) & {h.doc.id for h in r.search(t.prompt, 10)}) / len(set(t.metadata["supporting_ids"])) for t in tasks]
                rows.append((f"{name}: supporting-passage recall@10 with the raw question", f"{np.mean(hits):.3f}"))

    lines = [
        "# Search environment benchmark",
        "",
        f"Machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}, bm25s {bm25s.__version__}; "
        "shared 2-core machine (other jobs running), so treat timings as noisy.",
        "Command: `python " + " ".join(["bench/search.py", *sys.argv[1:]]) + "`",
        "",
        "| measure | result |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
