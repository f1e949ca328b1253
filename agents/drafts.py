"""Where :class:`~turngym.agents.hf.HFPolicy`'s draft tokens come from.

A decode step may feed, behind a row's last token, tokens it guesses come next; one forward then
scores every fed position and the row keeps its tokens while they equal the guesses (see
``agents/hf.py``, "Drafts"). A guess only ever costs compute: which tokens a row gets never
depends on it. Two sources, tried in this order:

- ``ReplyMemory.draft(response, limit)``: the replies this policy generated before, as a token
  trie with counts. From the node the row's reply so far leads to, the draft follows the child
  that more than half of the replies through that node took, while there is one. An agent's
  reply is mostly format (``<action>down</action>`` is 21 byte-level tokens, one of which is a
  decision): the format is drafted and the decision sampled, so such a reply takes three
  forwards instead of 21. A branch no child dominates (the decision) ends the draft rather than
  feeding a guess that is likely wrong.
- ``lookup_drafts(ids, limit)``: prompt-lookup decoding, for a reply that copies from its
  prompt (a board, a file, a passage) or repeats itself.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_DRAFTS", "MIN_DRAFTS", "ReplyMemory", "lookup_drafts"]

#: Drafts per row and forward: at most (a forward of 2 SmolLM2 rows x 33 tokens cost 2.6x one of
#: 2 x 1 on 2 CPU cores) and at least (fewer would not pay for the wider step).
MAX_DRAFTS, MIN_DRAFTS = 64, 4


def lookup_drafts(ids: np.ndarray, limit: int, longest: int = 4, shortest: int = 2) -> list[int]:
    """Prompt-lookup drafts: ``limit`` tokens that followed the latest earlier occurrence of the
    last n tokens of ``ids`` (n from ``longest`` down to ``shortest``), or none; where the copy
    reaches the end of ``ids`` it goes on as if the sequence repeated from that occurrence.

    A reply that copies from its prompt (a board, a file, a passage: the usual reply in this
    gym's environments) or repeats itself is then checked several tokens per forward pass."""
    length = len(ids)
    if limit <= 0:
        return []
    for n in range(min(longest, length - 1), shortest - 1, -1):
        windows = np.lib.stride_tricks.sliding_window_view(ids[:length - 1], n)
        hits = np.flatnonzero((windows == ids[length - n:]).all(axis=1))
        if hits.size:
            start = int(hits[-1]) + n
            drafts = ids[start:start + limit].tolist()
            # past the end of ``ids`` the copy continues from its own drafts: a loop of period
            # ``length - start`` is drafted whole, not only up to the sequence's end
            while len(drafts) < limit:
                drafts.append(drafts[len(drafts) - (length - start)])
            return drafts
    return []


class _Node:
    __slots__ = ("children", "count")

    def __init__(self) -> None:
        self.count = 0
        """Replies that passed through (or ended at) this node."""
        self.children: dict[int, _Node] = {}


class ReplyMemory:
    """Earlier replies as a token trie with counts; :meth:`draft` continues a reply the way more
    than half of the earlier replies that shared its beginning went on (module doc).

    Only the first ``depth`` tokens of a reply are remembered, and the memory starts afresh
    once it holds ``max_nodes`` nodes, so it stays small and follows the policy as it changes."""

    def __init__(self, depth: int = 64, max_nodes: int = 200_000) -> None:
        self.depth = depth
        self.max_nodes = max_nodes
        self._root = _Node()
        self._nodes = 1

    def add(self, reply: list[int]) -> None:
        """Remember one reply's token ids."""
        if self._nodes >= self.max_nodes:
            self._root, self._nodes = _Node(), 1
        node = self._root
        node.count += 1
        for token in reply[: self.depth]:
            child = node.children.get(token)
            if child is None:
                child = node.children[token] = _Node()
                self._nodes += 1
            child.count += 1
            node = child

    def draft(self, reply: list[int], limit: int) -> list[int]:
        """Up to ``limit`` tokens after ``reply`` (the tokens so far): from the node ``reply``
        leads to, the majority child while there is one; none when no earlier reply began so."""
        node: _Node | None = self._root
        for token in reply:
            node = node.children.get(token)
            if node is None:
                return []
        drafts: list[int] = []
        while len(drafts) < limit and node.children:
            token, child = max(node.children.items(), key=lambda item: item[1].count)
            if 2 * child.count <= node.count:  # no majority: a likely-wrong guess costs a position
                break
            drafts.append(token)
            node = child
        return drafts
