"""Typed configuration as TOML: nested dataclasses in and out, dotted `--set section.key=value` overrides, diffs.

A field that is itself a dataclass is a TOML table (`[env]`, `[agent.sampling]`); every other field is a value.
Fields marked `RUNTIME` are state a command fills in (a ledger path, a turn's stop strings) and are never read or
written. Every mistake (an unknown key or section, a value of the wrong type or out of its range in
`bounds.RANGES`) is a one-line `ConfigError` naming the valid choices.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from researchrl.bounds import MAX_CONFIG_BYTES, check_range, check_size
from researchrl.errors import ConfigError

T = TypeVar("T")
RUNTIME = {"config": False}  # field(metadata=RUNTIME): not a setting, never in a config file


def settings_of(cls: type) -> dict[str, Any]:
    """The configurable fields of a dataclass and their resolved types."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.metadata.get("config", True)}


def merge(obj: T, data: Mapping[str, Any], where: str = "") -> T:
    """A copy of the dataclass `obj` with `data` (nested mappings for sections) applied, every value typed and checked."""
    known = settings_of(type(obj))
    changes: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{where}{key}"
        if key not in known:
            raise ConfigError(_unknown(name, where, known, section=isinstance(value, Mapping)))
        kind = known[key]
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{name} is a section ([{name}]); set its keys, e.g. {name}.{next(iter(settings_of(kind)))}=...")
            changes[key] = merge(getattr(obj, key), value, f"{name}.")
        else:
            changes[key] = coerce(kind, value, name)
            check_range(name, changes[key])
    try:
        return dataclasses.replace(obj, **changes)  # type: ignore[type-var]
    except ValueError as err:  # a dataclass's own __post_init__ check
        raise ConfigError(f"{where.rstrip('.')}: {err}" if where else str(err)) from None


def _unknown(name: str, where: str, known: Mapping[str, Any], section: bool) -> str:
    """The one-line error for a key that does not exist, with the valid keys and sections of that level."""
    keys = sorted(k for k, kind in known.items() if not dataclasses.is_dataclass(kind))
    sections = sorted(f"[{where}{k}]" for k, kind in known.items() if dataclasses.is_dataclass(kind))
    hint = ""
    if not where:  # a key of a section given without its section name: say where it lives
        for table, kind in known.items():
            if dataclasses.is_dataclass(kind) and name in _all_keys(kind):
                hint = f" (did you mean {table}.{name}?)"
    valid = ", ".join(keys) + (f"; sections: {', '.join(sections)}" if sections else "")
    what = f"section [{name}]" if section else f"setting {name!r}"
    return f"unknown {what}{hint}; valid here: {valid}"


def _all_keys(cls: type) -> set[str]:
    """Every key name at any depth below `cls`."""
    names = set()
    for key, kind in settings_of(cls).items():
        names |= _all_keys(kind) if dataclasses.is_dataclass(kind) else {key}
    return names


def coerce(kind: Any, value: Any, name: str) -> Any:  # noqa: ANN401, C901 - one branch per supported type
    """`value` (from TOML, or a command-line string) as the type `kind`; a ConfigError otherwise."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return None
        (kind,) = [a for a in args if a is not type(None)]
        origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{name} must be one of {', '.join(map(str, args))}, not {value!r}")
        return value
    text = isinstance(value, str)
    try:
        if kind is bool:
            if text and value.lower() in ("true", "false", "1", "0"):
                return value.lower() in ("true", "1")
            if isinstance(value, bool):
                return value
        elif kind is int:
            if text or (isinstance(value, int) and not isinstance(value, bool)):
                return int(value)
        elif kind is float:
            if text or (isinstance(value, (int, float)) and not isinstance(value, bool)):
                return float(value)
        elif kind in (str, Path):
            if text or isinstance(value, Path):
                return kind(value)
        elif _is_pairs(kind):
            pairs = dict(item.split("=", 1) for item in value.split(",") if item) if text else value
            if isinstance(pairs, Mapping):  # a TOML table {name = number}, or "name=number,..." on the command line
                key_kind, value_kind = typing.get_args(args[0])
                return tuple((coerce(key_kind, k, name), coerce(value_kind, v, f"{name}.{k}")) for k, v in pairs.items())
        elif origin in (tuple, frozenset):
            items = [v for v in value.split(",") if v] if text else value
            if isinstance(items, (list, tuple)):
                return origin(coerce(args[0], item, name) for item in items)
        else:
            raise TypeError(f"{name}: unsupported setting type {kind}")  # a bug in a config class, not a user error
    except ValueError:
        pass
    raise ConfigError(f"{name} expects {_describe(kind)}, got {value!r}")


def _is_pairs(kind: Any) -> bool:  # noqa: ANN401
    """tuple[tuple[K, V], ...]: a mapping kept hashable (a TOML table in files)."""
    args = typing.get_args(kind)
    return typing.get_origin(kind) is tuple and len(args) == 2 and args[1] is Ellipsis and typing.get_origin(args[0]) is tuple


def _describe(kind: Any) -> str:  # noqa: ANN401
    """A type as a user reads it."""
    if _is_pairs(kind):
        return "a table of name = number (on the command line: name=number,name=number)"
    if typing.get_origin(kind) in (tuple, frozenset):
        return "a list (on the command line: comma-separated)"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path"}.get(kind, str(kind))


def to_dict(obj: Any) -> dict[str, Any]:  # noqa: ANN401
    """The settings of `obj` as TOML-ready values (None is left out where it is the default, else written 'none')."""
    out: dict[str, Any] = {}
    defaults = type(obj)()
    for key, kind in settings_of(type(obj)).items():
        value = getattr(obj, key)
        if dataclasses.is_dataclass(kind):
            out[key] = to_dict(value)
        elif value is None:
            if getattr(defaults, key) is not None:
                out[key] = "none"
        elif isinstance(value, Path):
            out[key] = str(value)
        elif isinstance(value, frozenset):
            out[key] = sorted(value)
        elif _is_pairs(kind):
            out[key] = dict(value)
        elif isinstance(value, tuple):
            out[key] = list(value)
        else:
            out[key] = value
    return out


def to_toml(obj: Any, header: str = "") -> str:  # noqa: ANN401
    """`obj` as a TOML document (values first, then one table per section), behind an optional comment header.

    Secrets (a Redis password in a cache URL, a key in a URL's query) are written "[redacted]": keys live in env vars.
    """
    import tomli_w

    from researchrl.web.redact import scrub

    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return comment + tomli_w.dumps(scrub(to_dict(obj)))


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a mapping; an unreadable or malformed file is a ConfigError naming it."""
    try:
        check_size(f"config file {path}", Path(path).stat().st_size, MAX_CONFIG_BYTES, "bytes", ConfigError)
        return tomllib.loads(Path(path).read_text())
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """`section.key=value` strings from the command line, as nested mappings for `merge`."""
    flat: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not all(part.strip() for part in key.split(".")):
            raise ConfigError(f"--set expects section.key=value (e.g. env.reader=llm), got {pair!r}")
        flat[".".join(part.strip() for part in key.split("."))] = value.strip()
    return nest(flat)


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{dotted key: value} as nested mappings; a key that is both a value and a section is a ConfigError."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *sections, last = key.split(".")
        node = out
        for part in sections:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part} is both a value and a section")
        if isinstance(node.get(last), dict):
            raise ConfigError(f"{key}: {last} is both a value and a section")
        node[last] = value
    return out


def layered(under: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Two nested settings mappings as one; `over` wins, sections merge key by key."""
    out = dict(under)
    for key, value in over.items():
        both = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        out[key] = layered(out[key], value) if both else value
    return out


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as {dotted key: value}."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def changed_keys(before: Any, after: Any) -> list[str]:  # noqa: ANN401
    """Dotted keys whose values differ between two configs of the same class."""
    a, b = flatten(to_dict(before)), flatten(to_dict(after))
    return sorted(key for key in a.keys() | b.keys() if a.get(key) != b.get(key))
