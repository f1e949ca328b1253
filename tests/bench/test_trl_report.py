"""bench/trl_grpo.py keeps every measurement: a new one goes on top, the earlier ones and the notes
written between them stay (the report had been overwritten by each run and restored by hand)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("trl_grpo_bench", ROOT / "bench" / "trl_grpo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)  # imports torch and turngym, not trl (that is loaded per run)
    return module


def test_a_new_measurement_goes_on_top_and_keeps_the_earlier_ones(tmp_path):
    bench = _bench()
    report = tmp_path / "results" / "trl.md"
    bench.prepend_report(report, "## Measurement A\n\nfirst\n")
    report.write_text(report.read_text() + "\nA note written by hand.\n")
    bench.prepend_report(report, "## Measurement B\n\nsecond\n")
    text = report.read_text()
    assert text.startswith(bench.TITLE + "\n\n## Measurement B")
    assert text.count(bench.TITLE) == 1
    assert text.index("second") < text.index("first") < text.index("A note written by hand.")
