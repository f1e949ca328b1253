"""Registration of the generated-world search environments and their suites."""

from __future__ import annotations

from turngym.envs.registration import register
from turngym.envs.tasks import register_suite

ENTRY_POINT = "turngym.envs.searchworld.env:SearchWorldEnv"
SUITES = {
    "searchworld-1hop": ("load_1hop", "1-hop"),
    "searchworld-2hop": ("load_2hop", "2-hop"),
    "searchworld-3hop": ("load_3hop", "3-hop"),
    "searchworld-mixed": ("load_mixed", "1- to 3-hop"),
}
# Each hop is a search and an open; two spare turns. Results list ids and titles only (no
# snippet), so reading a passage takes an open; three results per search fit a small context.
TOOL_SETTINGS = {"snippet_chars": 0, "default_k": 3}


def register_all() -> None:
    for name, (loader, what) in SUITES.items():
        register_suite(name, f"turngym.envs.searchworld.suites:{loader}",
                       f"Generated-world QA, {what} questions over fictional worlds of 16 passages "
                       "(100 frozen train / 300 test from 100 test worlds; training draws fresh worlds)")
    for hops in (1, 2, 3):
        register(f"turngym/SearchWorld-{hops}hop-v0", ENTRY_POINT,
                 {"suite": f"searchworld-{hops}hop", "max_turns": 2 * hops + 3, **TOOL_SETTINGS},
                 f"Generated-world QA: {hops}-hop questions; search, open, answer; EM reward.")
    register("turngym/SearchWorld-v0", ENTRY_POINT,
             {"suite": "searchworld-mixed", "max_turns": 9, **TOOL_SETTINGS},
             "Generated-world QA: 1- to 3-hop questions (searches per episode vary); EM reward.")
