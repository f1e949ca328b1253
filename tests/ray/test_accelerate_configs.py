"""The multi-GPU config files in examples/ load with accelerate's own config loader."""

from pathlib import Path

import pytest

config_args = pytest.importorskip("accelerate.commands.config.config_args")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name,kind,key", [("accelerate/fsdp.yaml", "FSDP", "fsdp_config"),
                                           ("accelerate/deepspeed_zero3.yaml", "DEEPSPEED", "deepspeed_config")])
def test_example_config_loads_in_accelerate(name, kind, key):
    cfg = config_args.ClusterConfig.from_yaml_file(str(EXAMPLES / name))
    assert str(cfg.distributed_type).endswith(kind)
    assert str(cfg.mixed_precision).endswith("bf16")
    section = getattr(cfg, key)
    assert section.get("zero_stage", 3) == 3 and section.get("fsdp_sharding_strategy", "FULL_SHARD") == "FULL_SHARD"
