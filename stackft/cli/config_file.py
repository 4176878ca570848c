"""``--config FILE``: a command's options from a YAML or JSON file, command-line options winning.

``stackft train --config run.yaml --phase2-lr 3e-5`` takes every setting in ``run.yaml`` and then the
options given on the command line, whatever their order. The file is one mapping of option names
to values; names are the TrainConfig fields (``phase2_lr`` or ``phase2-lr``) and the command's own
options (``seed``, ``resume``). Values have the types the fields do (lists for ``layers``, a mapping
for ``head_options``); strings are read as the command line reads them (``"1e-3"``, ``"-2,-1"``), so
YAML's habit of taking ``1e-3`` for a string does no harm. Every run folder's ``config.json`` is a
valid config file (``stackft train --config runs/x/config.json --output-dir runs/y`` repeats run x).

JSON (``.json``) always works; YAML (``.yaml``/``.yml``) needs PyYAML (``pip install pyyaml``).
A file with another suffix is read as JSON, then as YAML. Unknown names, values of the wrong type
and missing files are one-line usage errors (exit code 2).

How: the option's parser pre-reads ``--config`` from the arguments and starts parsing with the
file's values already in the namespace, so argparse fills in defaults only for what the file does
not set and the command line overrides both.
"""

from __future__ import annotations

import argparse
import difflib
import json
import types
import typing
from pathlib import Path

YAML_SUFFIXES = (".yaml", ".yml")
_SKIP_DESTS = {"help", "config", "version"}


def _scan(args) -> str | None:
    """The value of the last ``--config X`` / ``--config=X`` in ``args`` (None: none)."""
    found = None
    args = list(args or [])
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--config" and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith("--config="):
            found = arg.split("=", 1)[1]
    return found


def read_config_file(path) -> dict:
    """The mapping in a YAML or JSON file (ValueError with a one-line reason when it cannot be read)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"--config {path}: no such file")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix in YAML_SUFFIXES:
        data = _yaml(text, path)
    else:
        try:
            data = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            if suffix == ".json":
                raise ValueError(f"--config {path}: not valid JSON: {exc}") from None
            try:
                data = _yaml(text, path)
            except ValueError as yexc:
                raise ValueError(f"--config {path}: neither JSON ({exc}) nor YAML ({yexc})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a mapping of option names to values, got {type(data).__name__}")
    return data


def _yaml(text: str, path: Path):
    try:
        import yaml
    except ImportError:
        raise ValueError(f"--config {path}: YAML config files need PyYAML: pip install pyyaml "
                         f"(or write the config as JSON)") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"--config {path}: not valid YAML: {' '.join(str(exc).split())}") from None


def _optional(dest: str) -> bool:
    """Whether the TrainConfig field ``dest`` may be None (its annotation allows it)."""
    from stackft.config import TrainConfig

    hint = typing.get_type_hints(TrainConfig).get(dest)
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def _as_text(value) -> str:
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _convert(action: argparse.Action, value, where: str):
    if isinstance(action, (argparse.BooleanOptionalAction, argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}")
        return value
    if value is None:
        if action.default is None or _optional(action.dest):
            return None
        raise ValueError(f"{where}: null is not allowed (default: {action.default!r})")
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected a value, not {value!r}")
    convert = action.type or str
    if convert is str and not isinstance(value, str):
        if isinstance(value, (dict, list)):
            raise ValueError(f"{where}: expected a string, got {type(value).__name__}")
        value = str(value)
    try:
        out = convert(value if isinstance(value, str) else _as_text(value))
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"{where}: {exc}") from None
    except (ValueError, TypeError):  # what argparse says for a bad value of a plain type
        raise ValueError(f"{where}: invalid {getattr(convert, '__name__', 'option')} value: {value!r}") from None
    if action.choices is not None and out not in action.choices:
        raise ValueError(f"{where}: {out!r} is not one of {', '.join(map(str, action.choices))}")
    return out


def config_file_values(parser: argparse.ArgumentParser, path) -> dict:
    """The file's settings as ``{dest: value}`` for ``parser``'s options (ValueError: one-line reason)."""
    actions = {a.dest: a for a in parser._actions if a.dest not in _SKIP_DESTS and a.option_strings}
    out = {}
    for key, value in read_config_file(path).items():
        dest = str(key).replace("-", "_")
        if dest not in actions:
            close = difflib.get_close_matches(dest, list(actions), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"--config {path}: unknown setting {key!r}{hint}")
        out[dest] = _convert(actions[dest], value, f"--config {path}: {key}")
    return out


class _ConfigFileAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, "_config_file_read", None) != values:
            parser.error(f"write {self.option_strings[0]} in full, followed by the file")
        setattr(namespace, self.dest, values)


def add_config_file_option(parser: argparse.ArgumentParser, group=None) -> None:
    """Add ``--config FILE`` to ``parser`` (a command's parser; see the module docstring)."""
    (group or parser).add_argument(
        "--config", metavar="FILE", action=_ConfigFileAction, default=None,
        help="read settings from a YAML or JSON file (every run folder's config.json is one); options given on "
             "the command line override it")
    parse = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        path = _scan(args)
        if path is not None:
            try:
                values = config_file_values(parser, path)
            except ValueError as exc:
                parser.error(str(exc))
            namespace = namespace if namespace is not None else argparse.Namespace()
            for dest, value in values.items():
                if not hasattr(namespace, dest):
                    setattr(namespace, dest, value)
            namespace._config_file_read = path
        return parse(args, namespace)

    parser.parse_known_args = parse_known_args
