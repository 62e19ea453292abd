"""Frozen-dataclass configurations: nested-dict conversion and TOML / YAML / JSON files.

Every method configuration is a frozen (hashable) dataclass with documented defaults. ``to_dict``
turns one into plain nested dicts and lists (what JSON, TOML and YAML hold); ``from_dict`` is its
inverse with validation: unknown keys raise ``ValueError`` naming the key and the valid keys, and
values are coerced to the annotated types (``"1e-3"`` -> float, lists -> tuples, nested dicts ->
nested dataclasses). ``None`` is not representable in TOML, so ``None`` entries are left out of TOML
files; configs therefore keep ``None`` only as a default.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import numbers
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

import yaml

_SUFFIXES = (".toml", ".yaml", ".yml", ".json")


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Which network a DIP method builds: a registry ``name`` plus attribute overrides.

    ``base`` (the network's width: a U-Net's first level, the skip network's channels at every
    scale, a decoder's features; 1 to :data:`MAX_WIDTH`) and ``norm`` (``"batch"``, ``"group"``,
    ``"none"``) override the network's own default when not ``None``. ``weight_init``:
    ``"normal002"`` (weights N(0, 0.02^2), the reference code's choice and the default) or
    ``"default"`` (Flax's LeCun-normal; with it the first output of a small U-Net can carry a large
    constant offset that Adam removes only slowly: ``benchmarks/RESULTS.md``). ``options`` holds
    any other attribute as ``(name, value)`` pairs, e.g. ``(("bilinear", False),)``. Input and
    output channels are set by the method from the operator.
    """

    name: str = "unet4"
    base: int | None = None
    norm: str | None = None
    weight_init: str = "normal002"
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        integer = isinstance(self.base, numbers.Integral) and not isinstance(self.base, bool)
        if self.base is not None and not (integer and 1 <= self.base <= MAX_WIDTH):
            raise ValueError(f"network.base must be an integer from 1 to {MAX_WIDTH}, got {self.base!r}")

    def overrides(self) -> dict[str, Any]:
        """Keyword overrides for ``sgdip_jax.networks.get_network`` (``base`` as the network's own
        width attribute, :data:`WIDTH_FIELDS`)."""
        explicit = {} if self.norm is None else {"norm": self.norm}
        if self.base is not None:
            explicit.update(WIDTH_FIELDS.get(self.name, lambda w: {"base": w})(self.base))
        return {**explicit, "weight_init": self.weight_init, **dict(self.options)}


MAX_WIDTH = 4096
WIDTH_FIELDS = {
    "skip": lambda w: {"num_channels_down": (w,) * 5, "num_channels_up": (w,) * 5},
    "deep_decoder": lambda w: {"features": w},
    "conv_decoder": lambda w: {"features": w},
}
"""How ``NetworkConfig.base`` (``--width``) sets the width of the networks that are not U-Nets."""


def check_choice(value, choices, field: str) -> None:
    """ValueError naming ``field`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{field} must be one of {list(choices)}, got {value!r}")


def check_number(value, field: str, *, minimum: float = 0.0, inclusive: bool = False, optional: bool = False):
    """ValueError naming ``field`` unless ``value`` is a finite number ``> minimum`` (``>=`` when
    ``inclusive``; ``None`` passes when ``optional``)."""
    if value is None and optional:
        return
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
        raise ValueError(
            f"{field} must be a finite number {'>=' if inclusive else '>'} {minimum:g}"
            f"{' (or unset)' if optional else ''}, got {value!r}"
        )


def to_dict(cfg) -> dict[str, Any]:
    """Nested plain-dict form of a dataclass instance (tuples become lists)."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"expected a dataclass instance, got {type(cfg).__name__}")
    return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def _plain(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def from_dict(cls, data, *, where: str = ""):
    """Instance of dataclass ``cls`` from a nested mapping (missing keys take their defaults)."""
    if data is None:
        data = {}
    if isinstance(data, cls):
        return data
    if not isinstance(data, typing.Mapping):
        raise ValueError(f"{where or cls.__name__}: expected a table of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ValueError(f"unknown config key {name!r}; valid keys{' of ' + where if where else ''}: {names}")
        kwargs[key] = _coerce(value, hints[key], name)
    return cls(**kwargs)


def _coerce(value, tp, name):
    """``value`` converted to annotation ``tp``; ValueError naming field ``name`` otherwise."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, name)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(f"{name}: {value!r} matches none of {tp}: {'; '.join(errors)}")
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{name}: expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where=name)
    if origin is tuple:
        if isinstance(value, typing.Mapping):
            value = list(value.items())
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{name}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ValueError(f"{name}: expected {len(args)} entries, got {len(value)}")
        return tuple(_coerce(v, a, f"{name}[{i}]") for i, (v, a) in enumerate(zip(value, args or [Any] * len(value))))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError(f"{name}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            f = float(value)
        except (TypeError, ValueError):
            f = math.nan
        if not isinstance(value, bool) and math.isfinite(f) and f == int(f):
            return int(f)
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(f"{name}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{name}: expected a string, got {value!r}")
        return value
    return value


def layered(cls, *, table=None, updates=None, sets=(), where: str = ""):
    """A frozen ``cls`` from layers, later ones winning: its defaults, ``table`` (a nested dict, e.g. a
    config-file table), ``updates`` (dotted keys such as ``"network.base"``) and ``sets``
    (``"key=value"`` strings, the value read as JSON when it parses, else as a string)."""
    data = json.loads(json.dumps(table or {}))
    for key, value in (updates or {}).items():
        _set_dotted(data, key, value)
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        _set_dotted(data, key.strip(), _parse_value(value.strip()))
    return from_dict(cls, data, where=where)


def _parse_value(text: str):
    """A ``--set`` value: JSON (numbers, true/false, null, lists, quoted strings) or a bare string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _set_dotted(table: dict, key: str, value) -> None:
    *parents, last = key.split(".")
    for name in parents:
        child = table.get(name)
        table[name] = child = dict(child) if isinstance(child, dict) else {}
        table = child
    table[last] = value


def load_config(path, cls=None):
    """Read a TOML / YAML / JSON file; return the dict, or ``from_dict(cls, ...)`` when ``cls`` is given."""
    path = Path(path)
    if path.suffix.lower() not in _SUFFIXES:
        raise ValueError(f"{path}: unsupported config format {path.suffix!r}; expected one of {list(_SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 text file (a config file is TOML, YAML or JSON text)") from None
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot parse config: {err}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a table of settings at top level, got {type(data).__name__}")
    if cls is None:
        return data
    try:
        return from_dict(cls, data)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def apply_run_file(parser, path, tables, protected=()) -> dict[str, dict]:
    """Layer a run's config file (:func:`load_config`) under the command line: its option values become
    the defaults of ``parser`` (an ``argparse`` parser; each value converted as the command line would
    convert it), and its method tables are returned by name.

    Top-level keys are option names (``-`` or ``_``) or a name in ``tables`` (then a table of that
    method's config fields); ``protected`` options (what decides which files are written or
    replaced) must be typed each time and are refused here."""
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest not in ("help", "config")}
    defaults, method_tables = {}, {}
    for key, value in load_config(path).items():
        key = str(key)
        name = key.replace("-", "_")
        if key in tables:
            if not isinstance(value, dict):
                raise ValueError(f"{path}: [{key}] must be a table of {key} settings")
            method_tables[key] = value
        elif name in protected:
            raise ValueError(
                f"{path}: {key!r} cannot be set in a config file (it decides which files are written or "
                f"replaced); give --{name} on the command line"
            )
        elif name in actions:
            defaults[name] = _option_value(actions[name], value, f"{path}: {name}")
        else:
            raise ValueError(
                f"{path}: unknown key {key!r}; valid keys: {sorted(actions)} and method tables {sorted(tables)}"
            )
    parser.set_defaults(**defaults)
    return method_tables


def _option_value(action, value, where):
    """Config-file ``value`` of the ``argparse`` option ``action``, converted as the command line would."""
    if action.nargs == 0:  # a flag
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(action, argparse._AppendAction):  # a repeatable option
        return [str(v) for v in (value if isinstance(value, list) else [value])]
    if value is None or action.type is None:
        return value if value is None or isinstance(value, str) else str(value)
    try:
        return action.type(str(value))
    except ValueError:
        raise ValueError(f"{where}: invalid value {value!r}") from None


def save_config(path, cfg, *, overwrite: bool = False, comment: str = "") -> None:
    """Write ``cfg`` (dataclass or dict) as TOML / YAML / JSON by suffix, atomically.

    An existing file is only replaced with ``overwrite=True``. ``comment`` lines head TOML and YAML
    files as ``#`` comments (JSON has none).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise ValueError(f"{path}: unsupported config format {path.suffix!r}; expected one of {list(_SUFFIXES)}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    data = cfg if isinstance(cfg, dict) else to_dict(cfg)
    if suffix == ".toml":
        text = _toml_dumps(data)
    elif suffix == ".json":
        text = json.dumps(data, indent=2) + "\n"
    else:
        text = yaml.safe_dump(data, sort_keys=False)
    if comment and suffix != ".json":
        text = "".join(f"# {line}\n" for line in comment.splitlines()) + text
    from .files import atomic_write

    atomic_write(path, lambda f: f.write(text.encode()))


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise ValueError(f"cannot write {type(v).__name__} value {v!r} to TOML")


def _toml_dumps(data: dict, prefix: str = "") -> str:
    """TOML text for nested dicts of scalars and lists (``None`` entries are omitted)."""
    out = io.StringIO()
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    for key, value in data.items():
        if value is not None and key not in tables:
            out.write(f"{_toml_key(key)} = {_toml_value(value)}\n")
    for key, value in tables.items():
        name = f"{prefix}.{_toml_key(key)}" if prefix else _toml_key(key)
        out.write(f"\n[{name}]\n")
        out.write(_toml_dumps(value, name))
    return out.getvalue()


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)
