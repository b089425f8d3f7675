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


# The gate's checks: its `CheckSetting` fields (the others are gate-wide settings).
_CHECK_NAMES = frozenset(
    name for name, field in GateSettings.model_fields.items() if field.annotation is CheckSetting
)


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
    """`base` (default: the default gate) overridden by the settings a JSON/YAML file names.

    Each key is a check of `GateSettings`, whose value is a mapping of `CheckSetting` fields
    (merged over that check's setting in `base`) or a bare number (the threshold), or one of
    the gate-wide settings (`relative_to_twin`, `alignment_minimum`), whose value replaces
    `base`'s. A top-level `gate:` key may wrap the whole mapping.
    """
    overrides = load_mapping_file(path, what="gate file")
    if set(overrides) == {"gate"} and isinstance(overrides["gate"], dict):
        overrides = overrides["gate"]
    settings = GateSettings() if base is None else base
    checks = [name for name in GateSettings.model_fields if name in _CHECK_NAMES]
    gate_wide = [name for name in GateSettings.model_fields if name not in _CHECK_NAMES]
    merged: dict[str, Any] = settings.model_dump()
    for name, override in overrides.items():
        if name in _CHECK_NAMES:
            merged[name] = _check_override(path, name, override, getattr(settings, name))
        elif name in gate_wide:
            merged[name] = override
        else:
            raise ConfigError(
                f"gate file {path!r} names unknown check {name!r}; known checks: "
                f"{', '.join(checks)}; gate-wide settings: {', '.join(gate_wide)}"
            )
    try:
        return GateSettings.model_validate(merged)
    except ValidationError as error:
        raise ConfigError(f"gate file {path!r}: {validation_summary(error)}") from error


def load_label_mapping(path: str) -> dict[str, str]:
    """Candidate label name -> reference label name, from a JSON or YAML mapping."""
    content = load_mapping_file(path, what="label map")
    return {str(key): str(value) for key, value in content.items()}
