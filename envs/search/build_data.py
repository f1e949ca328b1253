"""Rebuild the packaged search corpus and task suite from the raw multi-hop QA files.

    python -m turngym.envs.search.build_data --src ../shared/data/multihop-qa [--out DIR]

Reads the files described in shared/data/multihop-qa/README.md and writes, byte for byte the
same on every run (sorted inputs, gzip with a zero timestamp):

- ``corpus.jsonl.gz``: the union of every paragraph (HotpotQA dev500 + train100 contexts and
  corpus, MuSiQue train100 paragraphs and corpus, 2WikiMultihopQA paragraphs), whitespace
  normalised and deduplicated by (title, text). A document's id is the first 8 hex digits of the
  SHA-1 of ``title + "\\n" + text``: stable across rebuilds and short enough for a model to copy.
- ``tasks.jsonl.gz``: the ``search-multihop`` suite. train = HotpotQA train100 + MuSiQue train100,
  test = HotpotQA dev500 (all 500, frozen). Task ids are the source question ids.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import io
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

from turngym.envs.search.corpus import DATA_DIR
from turngym.envs.tasks import Task

__all__ = ["build", "doc_id", "normalise_text"]

log = logging.getLogger(__name__)

_SPACES = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """Collapse runs of whitespace, so the same paragraph from two sources deduplicates."""
    return _SPACES.sub(" ", text).strip()


def doc_id(title: str, text: str) -> str:
    return hashlib.sha1(f"{title}\n{text}".encode()).hexdigest()[:8]


def _maybe_literal(value: Any) -> Any:
    """Some sample files store nested lists as Python-literal strings; read those back."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return json.loads(value)
    return value


class _CorpusBuilder:
    def __init__(self) -> None:
        self.docs: dict[str, dict[str, str]] = {}

    def add(self, title: str, text: str) -> str:
        title, text = normalise_text(title), normalise_text(text)
        key = doc_id(title, text)
        old = self.docs.get(key)
        if old is not None and (old["title"], old["text"]) != (title, text):
            raise RuntimeError(f"document id collision on {key}: {old['title']!r} vs {title!r}")
        self.docs[key] = {"id": key, "title": title, "text": text}
        return key


def _hotpot_dev(src: Path, corpus: _CorpusBuilder) -> list[Task]:
    tasks = []
    with (src / "hotpotqa_dev500.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            q = json.loads(line)
            support_titles, support_ids = [], []
            for ctx in q["contexts"]:
                key = corpus.add(ctx["title"], ctx["paragraph_text"])
                if ctx["is_supporting"]:
                    support_titles.append(normalise_text(ctx["title"]))
                    support_ids.append(key)
            answers = [a for obj in q["answers_objects"] for a in obj["spans"]]
            tasks.append(_task(q["question_id"], q["question_text"], answers, "hotpotqa", support_titles, support_ids, "test"))
    return tasks


def _hotpot_train(src: Path, corpus: _CorpusBuilder) -> list[Task]:
    for title, sentences in json.loads((src / "hotpotqa_train100_corpus.json").read_text("utf-8")).items():
        corpus.add(title, "".join(sentences))
    tasks = []
    for q in json.loads((src / "hotpotqa_train100.json").read_text("utf-8")):
        supporting = {normalise_text(t) for t, _ in _maybe_literal(q["supporting_facts"])}
        support_titles, support_ids = [], []
        for title, sentences in _maybe_literal(q["context"]):
            key = corpus.add(title, "".join(sentences))
            if normalise_text(title) in supporting:
                support_titles.append(normalise_text(title))
                support_ids.append(key)
        tasks.append(_task(q["_id"], q["question"], [q["answer"]], "hotpotqa", support_titles, support_ids, "train", q.get("type")))
    return tasks


def _musique_train(src: Path, corpus: _CorpusBuilder) -> list[Task]:
    for para in json.loads((src / "musique_train100_corpus.json").read_text("utf-8")):
        corpus.add(para["title"], para["text"])
    tasks = []
    for q in json.loads((src / "musique_train100.json").read_text("utf-8")):
        support_titles, support_ids = [], []
        for para in _maybe_literal(q["paragraphs"]):
            key = corpus.add(para["title"], para["paragraph_text"])
            if _maybe_literal(para["is_supporting"]) in (True, "True"):
                support_titles.append(normalise_text(para["title"]))
                support_ids.append(key)
        answers = [q["answer"], *_maybe_literal(q.get("answer_aliases") or [])]
        hops = len(_maybe_literal(q.get("question_decomposition") or []))
        tasks.append(_task(q["id"], q["question"], answers, "musique", support_titles, support_ids, "train", f"{hops}hop"))
    return tasks


def _task(qid: str, question: str, answers: list[str], dataset: str, titles: list[str], ids: list[str], split: str, kind: str | None = None) -> Task:
    answers = list(dict.fromkeys(a.strip() for a in answers if a and a.strip()))
    if not answers or not ids:
        raise RuntimeError(f"question {qid} has no gold answer or no supporting paragraph")
    meta: dict[str, Any] = {"dataset": dataset, "supporting_titles": titles, "supporting_ids": ids}
    if kind:
        meta["type"] = kind
    return Task(id=str(qid), prompt=normalise_text(question), answer=answers, metadata=meta, split=split)


def _write_gz_jsonl(path: Path, rows: list[str]) -> None:
    """Deterministic gzip: no file name, zero timestamp; written atomically."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        for row in rows:
            gz.write(row.encode("utf-8") + b"\n")
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


def build(src: Path, out: Path = DATA_DIR) -> dict[str, int]:
    """Build ``corpus.jsonl.gz`` and ``tasks.jsonl.gz`` in ``out`` from the raw files in ``src``."""
    src, out = Path(src), Path(out)
    if not (src / "hotpotqa_dev500.jsonl").is_file():
        raise FileNotFoundError(f"{src} does not hold the multi-hop QA files (hotpotqa_dev500.jsonl missing)")
    corpus = _CorpusBuilder()
    tasks = _hotpot_train(src, corpus) + _musique_train(src, corpus) + _hotpot_dev(src, corpus)
    for para in json.loads((src / "2wikimultihopqa_corpus6119.json").read_text("utf-8")):
        corpus.add(para["title"], para["text"])
    ids = [t.id for t in tasks]
    if len(set(ids)) != len(ids):
        raise RuntimeError("duplicate question ids across the sources")
    out.mkdir(parents=True, exist_ok=True)
    docs = sorted(corpus.docs.values(), key=lambda d: d["id"])
    _write_gz_jsonl(out / "corpus.jsonl.gz", [json.dumps(d, ensure_ascii=False, sort_keys=True) for d in docs])
    _write_gz_jsonl(out / "tasks.jsonl.gz", [t.model_dump_json() for t in tasks])
    counts = {"documents": len(docs), "train": sum(t.split == "train" for t in tasks), "test": sum(t.split == "test" for t in tasks)}
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, required=True, help="folder with the raw multi-hop QA files")
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="where to write the built files (default: the package's data/)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        counts = build(args.src, args.out)
    except FileNotFoundError as err:
        log.error("%s", err)
        return 2
    log.info("wrote %s: %d documents, %d train and %d test tasks", args.out, counts["documents"], counts["train"], counts["test"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
