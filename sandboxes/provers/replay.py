"""A stand-in Lean REPL process that answers commands with recorded replies.

Run as a script (standard library only, so it starts fast)::

    python replay.py NAME.in NAME.expected.out [NAME2.in NAME2.expected.out ...]

It speaks the leanprover-community REPL's framing exactly: it reads commands separated by
blank lines from stdin and writes each reply (the recorded text, verbatim, pretty-printed over
several lines) followed by a blank line. A command is matched to a recorded one by its JSON
value (lines joined the way the REPL joins them), so key order and spacing do not matter;
the same command recorded twice is answered in recorded order. A command with no recording
gets ``{"message": "replay: no recorded reply for this command"}``, the shape of a REPL error.

``read_transcript(in_path, out_path)`` gives the recorded ``(command, reply_text)`` pairs, and
``replay_command(paths)`` the argv that starts this process (what tests put in a
``LeanConfig.command``).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict, deque
from pathlib import Path

__all__ = ["read_blocks", "read_transcript", "command_key", "replay_command", "serve"]

NO_RECORDING = '{"message": "replay: no recorded reply for this command"}'


def read_blocks(text: str) -> list[str]:
    """Blocks of non-blank lines separated by blank lines (the REPL's framing)."""
    blocks, current = [], []
    for line in text.splitlines():
        if line.strip():
            current.append(line)
        elif current:
            blocks.append("\n".join(current))
            current = []
    if current:
        blocks.append("\n".join(current))
    return blocks


def command_key(block: str) -> str:
    """The canonical form of one command block. The REPL joins a block's lines without the
    line breaks before parsing (so a raw line break inside a JSON string disappears)."""
    joined = "".join(block.splitlines())
    try:
        return json.dumps(json.loads(joined), sort_keys=True, ensure_ascii=False)
    except json.JSONDecodeError:
        return joined.strip()


def read_transcript(in_path: str | Path, out_path: str | Path) -> list[tuple[str, str]]:
    commands = read_blocks(Path(in_path).read_text(encoding="utf-8"))
    replies = read_blocks(Path(out_path).read_text(encoding="utf-8"))
    if len(commands) != len(replies):
        raise ValueError(f"{in_path}: {len(commands)} commands but {len(replies)} replies")
    return list(zip(commands, replies))


def replay_command(paths: list[str | Path]) -> list[str]:
    """argv that starts a replay process over the given ``.in``/``.expected.out`` pairs."""
    return [sys.executable, str(Path(__file__).resolve()), *map(str, paths)]


def serve(pairs: list[tuple[str, str]], stdin=sys.stdin, stdout=sys.stdout) -> None:
    answers: dict[str, deque[str]] = defaultdict(deque)
    for command, reply in pairs:
        answers[command_key(command)].append(reply)
    current: list[str] = []

    def answer() -> None:
        queue = answers.get(command_key("\n".join(current)))
        if queue:
            reply = queue.popleft() if len(queue) > 1 else queue[0]
        else:
            reply = NO_RECORDING
        stdout.write(reply + "\n\n")
        stdout.flush()

    for line in stdin:
        if line.strip():
            current.append(line.rstrip("\n"))
        elif current:
            answer()
            current = []
    if current:
        answer()


def main(argv: list[str]) -> int:
    if len(argv) % 2:
        sys.stderr.write("usage: replay.py NAME.in NAME.expected.out [...]\n")
        return 2
    pairs: list[tuple[str, str]] = []
    for i in range(0, len(argv), 2):
        pairs += read_transcript(argv[i], argv[i + 1])
    serve(pairs)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
