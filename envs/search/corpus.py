"""Documents, corpora and the packaged multi-hop QA data.

A corpus is a JSONL file (optionally gzip-compressed, ``.jsonl.gz``) of ``{"id", "title",
"text"}`` objects, one a line. :func:`load_corpus` reads one and caches it per process, so the
G environments of a rollout group share one copy. :attr:`Corpus.fingerprint` (a hash of the
file's bytes) names the on-disk retrieval indexes built from it.

The packaged data (built by ``python -m turngym.envs.search.build_data``):

- ``data/corpus.jsonl.gz``: every paragraph of the multi-hop QA samples in shared/data,
  deduplicated by (title, text) — the evidence and its distractors.
- ``data/tasks.jsonl.gz``: the ``search-multihop`` suite — train: the HotpotQA and MuSiQue train
  samples; test: the 500-question HotpotQA dev sample. Each task: ``prompt`` = the question,
  ``answer`` = the list of gold answers, ``metadata`` = dataset, gold supporting titles and doc
  ids (never shown to the agent).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from turngym.envs.tasks import SuiteError, Task, TaskSuite

__all__ = [
    "CORPUS_PATH",
    "TASKS_PATH",
    "Corpus",
    "CorpusError",
    "Document",
    "load_corpus",
    "load_multihop_suite",
    "load_task_file",
    "open_text",
]

DATA_DIR = Path(__file__).parent / "data"
CORPUS_PATH = DATA_DIR / "corpus.jsonl.gz"
TASKS_PATH = DATA_DIR / "tasks.jsonl.gz"


class CorpusError(ValueError):
    """A corpus file that is missing or malformed (one clear sentence)."""


@dataclass(frozen=True)
class Document:
    """One passage: a stable id, a title and its text."""

    id: str
    title: str
    text: str


def open_text(path: str | Path):
    """Open a text file for reading, transparently decompressing ``.gz``."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


class Corpus:
    """An ordered collection of documents with lookup by id."""

    def __init__(self, documents: Iterable[Document], fingerprint: str = "") -> None:
        self.documents: list[Document] = list(documents)
        self.index_of: dict[str, int] = {}
        for i, doc in enumerate(self.documents):
            if doc.id in self.index_of:
                raise CorpusError(f"the corpus has two documents with id {doc.id!r}")
            self.index_of[doc.id] = i
        if not fingerprint:
            digest = hashlib.sha256()
            for doc in self.documents:
                digest.update(json.dumps([doc.id, doc.title, doc.text]).encode())
            fingerprint = digest.hexdigest()[:16]
        self.fingerprint = fingerprint
        """Hash of the corpus content; names the on-disk indexes built from it."""

    @classmethod
    def from_jsonl(cls, path: str | Path) -> Corpus:
        path = Path(path)
        if not path.is_file():
            raise CorpusError(f"corpus file {path} does not exist")
        docs = []
        with open_text(path) as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    docs.append(Document(str(obj["id"]), str(obj.get("title", "")), str(obj["text"])))
                except (json.JSONDecodeError, KeyError, TypeError) as err:
                    raise CorpusError(f"{path}:{lineno}: not a corpus line {{id, title, text}} ({err!r})") from None
        if not docs:
            raise CorpusError(f"corpus file {path} holds no documents")
        fingerprint = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        return cls(docs, fingerprint)

    def get(self, doc_id: str) -> Document | None:
        i = self.index_of.get(doc_id)
        return None if i is None else self.documents[i]

    def __len__(self) -> int:
        return len(self.documents)

    def __getitem__(self, i: int) -> Document:
        return self.documents[i]

    def __repr__(self) -> str:
        return f"Corpus({len(self)} documents, fingerprint={self.fingerprint})"


@functools.lru_cache(maxsize=8)
def _load_corpus_cached(path: str, mtime_ns: int) -> Corpus:
    return Corpus.from_jsonl(path)


def load_corpus(path: str | Path | None = None) -> Corpus:
    """The corpus at ``path`` (default: the packaged one), loaded once per process and file version."""
    path = Path(path) if path is not None else CORPUS_PATH
    # Every environment asks when it is made (once per episode in a rollout): one stat, and the
    # absolute path as the cache key (resolving symlinks would cost a syscall per component; a
    # file reached by two spellings is only loaded twice).
    try:
        status = path.stat()
    except OSError:
        status = None
    if status is None or not stat.S_ISREG(status.st_mode):
        raise CorpusError(f"corpus file {path} does not exist")
    return _load_corpus_cached(os.path.abspath(path), status.st_mtime_ns)


def load_task_file(path: str | Path, name: str | None = None) -> TaskSuite:
    """A task suite from a JSONL or JSONL.gz file of :class:`Task` objects."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"task file {path} does not exist")
    tasks = []
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    tasks.append(Task.model_validate_json(line))
                except ValueError as err:
                    raise SuiteError(f"{path}:{lineno}: not a valid task ({str(err).splitlines()[0]})") from None
    return TaskSuite(name or path.name.split(".")[0], tasks)


def load_multihop_suite() -> TaskSuite:
    """The packaged ``search-multihop`` suite (train: 200, test: 500)."""
    return load_task_file(TASKS_PATH, "search-multihop")
