"""Search over procedurally generated fictional worlds (issue #19).

``turngym.make("turngym/SearchWorld-2hop-v0")`` — the search environment's tools (``search``,
``open``, ``answer``) and reward, over a world generated per task: people, cities and companies
with typed attributes and relations written out as passages, 1- to 3-hop questions with their
gold support, every other passage a distractor. Training draws fresh worlds from the suite's
generator; the test worlds are frozen in ``data/``. ``expert_reply()`` is an oracle that reads
the passages it opens.

Modules: ``world`` (generation, the passage reader, the vocabulary), ``suites`` (tasks, the
frozen files, ``python -m turngym.envs.searchworld.suites``), ``env`` (the environment and its
per-world BM25 index), ``registration``.
"""
