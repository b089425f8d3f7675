"""Audit settings from JSON or YAML files: a whole `AuditConfig`, gate overrides, label maps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from trustdiff.config import CheckSetting, GateSettings
from trustdiff.errors import ConfigError


def validation_summary(error: ValidationError) -> str:
    """A pydantic error on one line: `field.path: message; ...`."""
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'value'}: {item['msg']}"
        for item in error.errors()
    )


def load_mapping_file(path: str, *, what: str) -> dict[str, Any]:
    """A JSON or YAML file holding one mapping (YAML is a superset of JSON)."""
    try:
        content = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read {what} {path!r}: {error.strerror or error}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{what} {path!r} is neither JSON nor YAML: {error}") from error
    if not isinstance(content, dict):
        raise ConfigError(f"{what} {path!r} must hold a mapping, got {type(content).__name__}")
    return content


def load_config_file(path: str) -> dict[str, Any]:
    """The fields of an `AuditConfig` (any subset, nested as in the model) from a file.

    Returned unvalidated, so that command-line flags can be laid over it first; validate the
    result with `AuditConfig.model_validate`.
    """
    return load_mapping_file(path, what="config file")


def _check_override(path: str, name: str, override: Any, default: CheckSetting) -> CheckSetting:
    if isinstance(override, bool) or not isinstance(override, int | float | dict):
        raise ConfigError(
            f"gate file {path!r}: check {name!r} must be a number or a mapping, got {override!r}"
        )
    fields = {"threshold": override} if isinstance(override, int | float) else override
    try:
        return CheckSetting.model_validate({**default.model_dump(), **fields})
    except ValidationError as error:
        raise ConfigError(
            f"gate file {path!r}: check {name!r}: {validation_summary(error)}"
        ) from error


def load_gate_settings(path: str, *, base: GateSettings | None = None) -> GateSettings:
    """`base` (default: the default gate) overridden by the checks a JSON/YAML file names.

    Each key is a check of `GateSettings`; its value is a mapping of `CheckSetting` fields
    (merged over that check's setting in `base`) or a bare number (the threshold). A
    top-level `gate:` key may wrap the whole mapping.
    """
    overrides = load_mapping_file(path, what="gate file")
    if set(overrides) == {"gate"} and isinstance(overrides["gate"], dict):
        overrides = overrides["gate"]
    settings = GateSettings() if base is None else base
    merged: dict[str, CheckSetting] = {}
    for name, override in overrides.items():
        default = getattr(settings, str(name), None)
        if not isinstance(default, CheckSetting):
            known = ", ".join(GateSettings.model_fields)
            raise ConfigError(f"gate file {path!r} names unknown check {name!r}; known: {known}")
        merged[name] = _check_override(path, name, override, default)
    return settings.model_copy(update=merged)


def load_label_mapping(path: str) -> dict[str, str]:
    """Candidate label name -> reference label name, from a JSON or YAML mapping."""
    content = load_mapping_file(path, what="label map")
    return {str(key): str(value) for key, value in content.items()}
