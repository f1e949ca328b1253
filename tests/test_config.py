import pytest
import yaml
from pydantic import ValidationError

from turngym.config import ConfigError, apply_overrides, load_config
from turngym.trainers.config import TrainConfig


def test_defaults_run_without_a_file():
    cfg = load_config(TrainConfig)
    assert cfg.estimator.name == "grpo" and cfg.loss.eps_low == 0.2 and cfg.rollout.group_size == 8


def test_yaml_plus_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"env": {"id": "turngym/FrozenLake-v0"}, "optim": {"lr": 1e-4}}))
    cfg = load_config(TrainConfig, path, ["optim.lr=1e-5", "estimator.name=gigpo", "estimator.options={gamma: 0.9}",
                                          "rollout.stop=['</action>']", "run.wandb=true"])
    assert cfg.env.id == "turngym/FrozenLake-v0" and cfg.optim.lr == 1e-5
    assert cfg.estimator.options == {"gamma": 0.9} and cfg.rollout.stop == ["</action>"] and cfg.run.wandb is True


@pytest.mark.parametrize("override", ["optim.lrr=1", "rollout.group_sise=4", "nosuchsection.x=1"])
def test_unknown_keys_are_errors(override):
    with pytest.raises(ValidationError):
        load_config(TrainConfig, None, [override])


def test_bad_override_and_missing_file():
    with pytest.raises(ConfigError, match="section.field=value"):
        apply_overrides({}, ["lr"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(TrainConfig, "/nonexistent.yaml")


def test_every_example_config_validates():
    from pathlib import Path

    examples = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))
    assert examples
    for path in examples:
        load_config(TrainConfig, path)
