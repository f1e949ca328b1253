"""Loading configs: YAML files into pydantic models, with ``--set a.b=value`` overrides.

Configs are pydantic models (one flat model per component, each field documented); a YAML file
holds one mapping per component. ``--set optim.lr=1e-5`` overrides a field; the value is
parsed as YAML (so ``1e-5``, ``true``, ``[1, 2]`` and ``{a: 1}`` work). Unknown keys are errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel

__all__ = ["ConfigError", "load_config", "apply_overrides", "dump_config"]

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config file or override that cannot be used (one clear sentence)."""


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``data`` with each ``dotted.key=value`` override applied (values parsed as YAML)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like section.field=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def load_config(model: type[M], path: str | Path | None = None, overrides: list[str] | None = None) -> M:
    """``model`` validated from the YAML file at ``path`` (or defaults) plus ``overrides``."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of sections")
        data = loaded
    for item in overrides or []:
        _check_section_override(model, item)
    apply_overrides(data, overrides or [])
    return model.model_validate(data)


def _check_section_override(model: type[BaseModel], item: str) -> None:
    """An override that replaces a whole section with a value (``run=3``) is named as the
    culprit here, before a later override into that section (``run.out_dir=...``) trips on it."""
    key, sep, raw = item.partition("=")
    node: Any = model
    for part in key.strip().split("."):
        field = node.model_fields.get(part) if isinstance(node, type) and issubclass(node, BaseModel) else None
        node = field.annotation if field is not None else None
    if not (isinstance(node, type) and issubclass(node, BaseModel)):
        return
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if sep and not isinstance(value, dict):
        first = next(iter(node.model_fields), "FIELD")
        raise ConfigError(f"override {item!r}: {key.strip()} is a section, not a value; set its fields, "
                          f"e.g. {key.strip()}.{first}=...")


def dump_config(config: BaseModel, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
