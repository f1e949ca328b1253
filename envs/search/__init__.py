"""Search: multi-hop question answering over a local corpus (or a web search API).

``turngym.make("turngym/Search-v0")`` — tools ``search(query, k)``, ``open(doc_id)``,
``answer(text)``; EM (or F1, ``turngym/Search-F1-v0``) reward with SQuAD normalisation;
``info["stratum"]`` = search calls so far, ``info["anchor"]`` = (question, last result ids).

Modules (nothing heavy is imported by this package itself):

- ``env``: :class:`~turngym.envs.search.env.SearchEnv` and its options (``SearchOptions``).
- ``retrieval``: retrievers by name (``bm25``, ``dense``, ``hybrid``, ``web``) and their registry.
- ``corpus``: corpora (JSONL of ``{id, title, text}``, optionally gzipped) and the packaged data.
- ``metrics``: SQuAD normalisation, exact match, F1, the OTC-style tool-cost factor.
- ``policies``: scripted oracle and random policies (tests, benchmarks).
- ``build_data``: rebuilds ``data/`` from the raw files in shared/data/multihop-qa.

Your own data::

    turngym.make("turngym/Search-v0", corpus="my_corpus.jsonl", suite="my_questions.jsonl",
                 split="test")

where each question line is a task ``{"id", "prompt", "answer": [gold answers], "split"}``.
The BM25 index of a new corpus is built on first use and cached under
``~/.cache/turngym/search/<corpus fingerprint>/``.
"""
