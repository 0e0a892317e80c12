"""Reading settings from files into the typed config dataclasses, strictly.

Every config dataclass (simulator, trace selection, router, …) can be filled from a mapping — a YAML, TOML or
JSON file, or a sweep grid's cell. Unknown keys are errors that list the valid ones, and values are type-checked
(dacite, strict); the dataclass's own validation then runs as usual.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any

import dacite
import yaml


class ConfigFileError(ValueError):
    """A config file cannot be read or does not match the settings it configures."""


def setting(default, doc: str, panel: str | None = None, **meta) -> Any:
    """A config dataclass field with its documentation: ``doc`` is the help text, ``panel`` the ``--help``
    section, ``meta`` the other keys the command-line generator reads (``flags``, ``min``, ``max``, ``envvar``,
    ``cli``)."""
    md = {"doc": doc, **meta}
    if panel is not None:
        md["panel"] = panel
    return dataclasses.field(default=default, metadata=md)


def read_config_file(path: Path) -> dict[str, Any]:
    """A mapping from a .yaml/.yml/.toml/.json file; keys normalised to underscores."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigFileError(f"{path}: does not parse: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: expected a mapping of setting: value, got {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def build_from_mapping(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """A config dataclass from a mapping, strictly: unknown keys and wrong types are errors naming the key."""
    valid = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ConfigFileError(f"{where}unknown setting(s) {', '.join(unknown)}; valid settings: {', '.join(valid)}")
    try:
        return dacite.from_dict(cls, data, config=dacite.Config(strict=True, cast=[tuple, Path, float]))
    except dacite.DaciteError as exc:
        raise ConfigFileError(f"{where}{exc}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigFileError(f"{where}{exc}") from None
