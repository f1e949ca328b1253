"""The device check (bench/gpu.py, scripts/gpu-check.sh) runs before a GPU is ever lent.

The CPU dry run (``--device cpu --tiny``) goes through the same phases and the same Trainer
code as the GPU run; these tests hold its JSON to every field a reader of the GPU figures
relies on, and check that a failing or late phase is written down instead of ending the run.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

# the dry run takes ~15 s on an idle 2-core machine, and more under load
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PHASES = ["matmul_peak", "generation", "logprob_gap", "train_full", "train_lora"]


def load_gpu_module():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[dict, str, subprocess.CompletedProcess]:
    """One CPU dry run through the wrapper script, as CI and a reader would start it."""
    out = tmp_path_factory.mktemp("gpu")
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "scripts/gpu-check.sh", "--device", "cpu", "--tiny", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "gpu.json").read_text()), (out / "gpu.md").read_text(), proc


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_every_phase_ran_within_the_budget(dry_run):
    results, _, _ = dry_run
    assert results["device"] == "cpu" and results["size"] == "tiny"
    assert list(results["phases"]) == PHASES
    for name, record in results["phases"].items():
        assert record["status"] == "ok", (name, record.get("error"))
        assert positive(record["seconds"]) and positive(record["peak_memory_gib"])
    # every phase finished inside its own limit (none was cut short by the run's budget)
    assert results["total_s"] < results["budget_s"]
    for name, record in results["phases"].items():
        assert record["seconds"] < record["allotted_s"], name


def test_matmul_peak_and_generation_rates(dry_run):
    results, _, _ = dry_run
    assert positive(results["matmul_peak"]["tflops"])
    gen = results["generation"]
    assert gen["dtype"] == "bfloat16" and positive(gen["params"])
    assert [row["batch"] for row in gen["batches"]] == [1, 32, 256]
    for row in gen["batches"]:
        assert row["status"] == "ok"
        assert row["tokens"] == row["batch"] * gen["new_tokens"]  # EOS ignored: fixed-length rows
        assert positive(row["tokens_per_s"]) and positive(row["tflops"]) and positive(row["fraction_of_peak"])
    # a bigger batch amortises each decode step's fixed cost
    assert gen["batches"][2]["tokens_per_s"] > gen["batches"][0]["tokens_per_s"]


def test_logprob_gap_separates_bf16_from_the_fp32_floor(dry_run):
    gap = dry_run[0]["logprob_gap"]
    assert set(gap) == {"bf16_rollout_vs_fp32_train", "bf16_rollout_vs_bf16_autocast_train", "fp32_rollout_vs_fp32_train"}
    floor = gap["fp32_rollout_vs_fp32_train"]
    assert floor["abs_max"] < 1e-4  # the same weights in fp32: only KV-cache and padding noise
    for key in ("bf16_rollout_vs_fp32_train", "bf16_rollout_vs_bf16_autocast_train"):
        assert floor["abs_mean"] < gap[key]["abs_mean"] < 0.5, key
        assert gap[key]["k3"] >= 0


@pytest.mark.parametrize("phase, lora", [("train_full", False), ("train_lora", True)])
def test_training_runs_report_tokens_and_the_trainer_gap(dry_run, phase, lora):
    run = dry_run[0][phase]
    assert run["lora"] is lora
    assert (run["trainable_params"] < run["params"]) is lora  # LoRA trains adapters only
    assert run["sft_steps"] >= 1 and run["rl_steps"] >= 1
    assert run["rl_updates"] >= 1 and run["trained_tokens"] > 0  # an update really ran and was timed
    assert positive(run["rollout_tokens_per_s"]) and positive(run["update_tokens_per_s"])
    assert positive(run["update"]["tflops"]) and positive(run["update"]["fraction_of_peak"])
    gap = run["rollout_train_gap"]
    assert 0 <= gap["abs_mean"] <= gap["abs_max"] < 1.0
    assert 0.0 <= run["held_out_success"] <= 1.0 and len(run["held_out_ci"]) == 2


def test_markdown_tables_carry_the_numbers(dry_run):
    results, md, proc = dry_run
    for name in PHASES:
        assert f"| {name} | ok |" in md
    assert "| 256 |" in md and "bf16_rollout_vs_bf16_autocast_train" in md
    assert f"{results['matmul_peak']['tflops']:.1f} TFLOP/s" in md
    assert "wrote" in proc.stdout


def _fake_phases(monkeypatch, gpu, phases):
    monkeypatch.setattr(gpu, "PHASES", phases)
    monkeypatch.setitem(gpu.SIZES["tiny"], "phase_s", {name: 5 for name, _ in phases})


def test_a_failing_phase_is_recorded_and_the_rest_still_run(tmp_path, monkeypatch):
    gpu = load_gpu_module()

    def broken(ctx, seconds):
        raise RuntimeError("CUDA error: no kernel image is available")

    _fake_phases(monkeypatch, gpu, [("matmul_peak", broken), ("generation", lambda ctx, s: {"batches": []})])
    rc = gpu.main(["--device", "cpu", "--tiny", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "gpu.json").read_text())
    assert rc == 1
    assert results["phases"]["matmul_peak"]["status"] == "error"
    assert "no kernel image" in results["phases"]["matmul_peak"]["error"]
    assert results["phases"]["generation"]["status"] == "ok" and results["generation"] == {"batches": []}
    assert "| matmul_peak | error |" in (tmp_path / "gpu.md").read_text()


def test_phases_past_the_budget_are_skipped_not_started(tmp_path, monkeypatch):
    gpu = load_gpu_module()
    started = []
    _fake_phases(monkeypatch, gpu, [("matmul_peak", lambda ctx, s: started.append(s) or {})])
    assert gpu.main(["--device", "cpu", "--tiny", "--budget", "0.5", "--out", str(tmp_path)]) == 1
    record = json.loads((tmp_path / "gpu.json").read_text())["phases"]["matmul_peak"]
    assert started == [] and record["status"].startswith("skipped")


def test_a_bare_checkout_imports_turngym_through_a_symlink_farm():
    """The device machine has the working tree but no install: the script maps the folders
    into the turngym namespace itself. Simulated by dropping the editable install's finder."""
    code = (
        "import importlib.util, sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in str(f)]\n"
        "sys.path_importer_cache.clear()\n"
        "spec = importlib.util.find_spec('turngym')\n"
        "if spec and any('site-packages' in p for p in spec.submodule_search_locations or []): sys.exit(5)\n"
        f"sys.path.insert(0, {str(ROOT / 'bench')!r})\n"
        "import gpu; gpu.ensure_turngym_importable()\n"
        "import turngym.trainers.config, turngym; print(turngym.__file__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=120)
    if proc.returncode == 5:
        pytest.skip("turngym is installed in site-packages (not editable): no bare checkout to simulate")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "/turngym-src-" in proc.stdout  # imported through the farm, not an install


def test_carry_list_pins_the_versions_installed_here():
    from importlib.metadata import version

    proc = subprocess.run(["bash", "scripts/gpu-carry.sh", "--list"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    pins = dict(line.split("==") for line in proc.stdout.split())
    assert {"gymnasium", "pydantic", "pydantic-core"} <= set(pins)  # what the device image lacks
    assert all(pins[name] == version(name) for name in pins)


def test_the_watchdog_writes_the_json_when_a_phase_hangs(tmp_path):
    """A phase stuck in a call Python cannot interrupt: the process still ends, with the
    phases measured so far and the hung one named."""
    code = (
        "import importlib.util, sys, time\n"
        f"spec = importlib.util.spec_from_file_location('g', {str(ROOT / 'bench' / 'gpu.py')!r})\n"
        "gpu = importlib.util.module_from_spec(spec); spec.loader.exec_module(gpu)\n"
        "gpu.WATCHDOG_GRACE_S = 0.5\n"
        "gpu.PHASES = [('matmul_peak', lambda c, s: {'tflops': 1.0}), ('generation', lambda c, s: time.sleep(60))]\n"
        "gpu.SIZES['tiny']['phase_s'] = {'matmul_peak': 5, 'generation': 5}\n"
        f"sys.exit(gpu.main(['--device', 'cpu', '--tiny', '--budget', '3', '--out', {str(tmp_path)!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50)
    assert proc.returncode == 3, proc.stderr[-2000:]
    results = json.loads((tmp_path / "gpu.json").read_text())
    assert results["phases"]["matmul_peak"]["status"] == "ok" and results["matmul_peak"] == {"tflops": 1.0}
    assert "watchdog" in results["phases"]["generation"]["error"]
    assert results["total_s"] < 10


def test_the_full_size_fits_the_device_limits():
    """The GPU run as planned: a 100M-300M model built from a config (counted on the meta
    device, no weights allocated), a valid training config, and phases that end inside the
    device tool's 8-minute target even when the watchdog has to step in."""
    import torch

    from turngym.agents.models import load_model

    gpu = load_gpu_module()
    full = gpu.SIZES["full"]
    with torch.device("meta"):
        model, _ = load_model(full["model"])
    assert 100e6 <= sum(p.numel() for p in model.parameters()) <= 300e6
    assert full["gen_batches"] == [1, 32, 256]
    ctx = {"device": torch.device("cuda"), "size": full}
    for lora in (False, True):
        config = gpu.train_config(ctx, lora, "/tmp/unused")  # validated by TrainConfig
        assert config.policy.lora is lora and config.optim.mixed_precision == "bf16"
        assert config.env.id == "turngym/FrozenLake-v0" and config.sft.enabled
    default_budget = gpu.BUDGET_S["full"]
    assert sum(full["phase_s"].values()) <= default_budget
    # + ~40 s of start-up (imports, installing the wheels): under 8 minutes all told
    assert default_budget + gpu.WATCHDOG_GRACE_S + 40 <= 8 * 60


def test_cudnn_ab_dry_run_compares_both_settings_on_every_batch_and_shape_pass():
    """bench/gpu_cudnn_ab.py, the side-by-side behind planless_attention, runs on a CPU (where both
    settings are the same code, so every row's ids agree) and reports every line RESULTS quotes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "bench/gpu_cudnn_ab.py", "--device", "cpu", "--model",
                           "tiny-markov:hidden=32,layers=1,heads=2,seed=0", "--new-tokens", "3"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    decode = [line for line in lines if line.startswith("decode batch")]
    assert [line.split(":")[0] for line in decode] == ["decode batch 1", "decode batch 32", "decode batch 256"]
    for line, batch in zip(decode, (1, 32, 256)):
        assert f"rows with identical ids {batch}/{batch}" in line
        assert "ratio" in line
    train = [line for line in lines if line.startswith("train fwd+bwd")]
    assert len(train) == 4
    assert [("cudnn-allowed" in t, "new shapes" in t) for t in train] == [
        (True, True), (True, False), (False, True), (False, False)]
