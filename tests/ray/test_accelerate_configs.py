"""The multi-GPU config files in examples/ load with accelerate's own config loader."""

from pathlib import Path

import pytest

config_args = pytest.importorskip("accelerate.commands.config.config_args")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_fsdp_example_loads_in_accelerate():
    cfg = config_args.ClusterConfig.from_yaml_file(str(EXAMPLES / "accelerate" / "fsdp.yaml"))
    assert str(cfg.distributed_type).endswith("FSDP")
    assert str(cfg.mixed_precision).endswith("bf16")
    assert cfg.fsdp_config["fsdp_sharding_strategy"] == "FULL_SHARD"
    assert cfg.fsdp_config["fsdp_use_orig_params"] is True  # LoRA freezes some parameters
