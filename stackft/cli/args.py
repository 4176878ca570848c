"""What the ``stackft`` commands share: TrainConfig options, the train-file prologue, dispatch.

- :func:`add_config_args` adds one ``--field-name`` option per :class:`~stackft.config.TrainConfig`
  field, its type derived from the field's annotation and its help, choices and group from the
  field's metadata; :func:`config_from_args` turns the parsed options back into a TrainConfig.
- :func:`training_config` is the prologue of every command that needs a training file
  (``train``, ``cache build``, ``trials``).
- :class:`CommandError` is the one error a command raises when it cannot run as asked;
  :func:`run` (behind every ``main``) prints it, like bad data, damaged checkpoints and OS errors
  (a missing file, a full disk), as
  ``stackft <command>: error: <message>`` and returns exit code 2. Bad option values are
  argparse usage errors: one line, exit code 2 (:class:`Parser`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import types
import typing
import warnings
from dataclasses import MISSING, fields

from stackft.config import GROUPS, ConfigError, TrainConfig, suggest


class CommandError(ValueError):
    """A command cannot run as asked: ``stackft <command>: error: <message>``, exit code 2."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, ``<prog>: error: <message>``, exit code 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _check_value(self, action, value):
        # argparse's check, with the nearest choice for a typo (also for command names)
        if action.choices is not None and value not in action.choices:
            choices = ", ".join(map(str, action.choices))
            raise argparse.ArgumentError(action, f"invalid choice: {value!r} ({suggest(value, action.choices)}"
                                                 f"choose from {choices})")


# -- TrainConfig fields as options ----------------------------------------------------------------

def _int_or_float(s: str) -> int | float:
    """``--dev-size 1000`` (a count) or ``--dev-size 0.1`` (a fraction)."""
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count (integer) or a fraction (number), got {s!r}") from None


def _comma_separated(item: type):
    def parse(s: str) -> tuple:
        try:
            return tuple(item(x) for x in s.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {item.__name__} values, got {s!r}") from None

    return parse


def _json_object(s: str) -> dict:
    try:
        d = json.loads(s)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object, e.g. '{{\"a\": 1}}': {exc}") from None
    if not isinstance(d, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, e.g. '{{\"a\": 1}}', got {s!r}")
    return d


def option_type(hint, name: str = "?") -> tuple[typing.Callable[[str], typing.Any], str | None]:
    """``(converter, metavar)`` of a non-bool TrainConfig annotation; TypeError for one it cannot take.

    ``X | None`` is read as X; ``int``, ``float``, ``str`` as themselves; ``float | int`` as an int
    when the text is one, else a float; ``tuple[X, ...]`` as comma-separated X; ``dict`` as a JSON object.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        kinds = tuple(a for a in args if a is not type(None))
        if set(kinds) == {int, float}:
            return _int_or_float, "N|FRACTION"
        if len(kinds) == 1 and kinds[0] is not bool:
            return option_type(kinds[0], name)
    elif hint in (int, float, str):
        return hint, None
    elif origin is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in (int, float, str):
        return _comma_separated(args[0]), f"{args[0].__name__.upper()},..."
    elif hint is dict or origin is dict:
        return _json_object, "JSON"
    raise TypeError(f"TrainConfig.{name}: the command line has no option type for the annotation {hint!r}")


# Python 3.10's BooleanOptionalAction appends "(default: ...)" to the help itself; later ones do not.
_BOOL_SHOWS_DEFAULT = "%(default)" in (argparse.BooleanOptionalAction(["--x"], "x", default=False, help="").help)


def _help(text: str, default, shown_by_argparse: bool = False) -> str:
    """The field's help, with its default once: appended unless the text explains it (or it is None)."""
    text = text.replace("%", "%%")
    if default is None or shown_by_argparse or "default" in text.lower():
        return text
    return text + " (default: %(default)s)"


def add_config_args(parser: argparse.ArgumentParser, *, exclude=()) -> dict[str, argparse._ArgumentGroup]:
    """One ``--field-name`` option per TrainConfig field (but ``exclude``), in argument groups.

    Returns the groups (:data:`stackft.config.GROUPS` -> group) so a command can add its own
    options next to related ones. ``bool`` fields are ``--x/--no-x``.
    """
    # argparse takes "-2,-1" for an option unless it looks like a negative number; let
    # comma-separated negative layer lists (`--layers -2,-1`) count as numbers too.
    parser._negative_number_matcher = re.compile(r"^-\d+(,-?\d+)*$|^-\d*\.\d+$")
    hints = typing.get_type_hints(TrainConfig)
    groups = {g: parser.add_argument_group(g) for g in GROUPS}
    for f in fields(TrainConfig):
        if f.name in exclude:
            continue
        meta, hint = f.metadata, hints[f.name]
        default = f.default if f.default is not MISSING else f.default_factory()
        kw = dict(dest=f.name, default=default, choices=meta.get("choices"))
        flag = "--" + f.name.replace("_", "-")
        group = groups[meta["group"]]
        if hint is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction,
                               help=_help(meta["help"], default, _BOOL_SHOWS_DEFAULT), **kw)
        else:
            convert, metavar = option_type(hint, f.name)
            group.add_argument(flag, type=convert, metavar=metavar, help=_help(meta["help"], default), **kw)
    return groups


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed options (a field without an option keeps its default)."""
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)})


def training_config(args: argparse.Namespace) -> TrainConfig:
    """The prologue of the commands that need a training file: their config, with ``--train-path``,
    every setting checked (values, device, packages, head options, data files) before anything loads."""
    cfg = config_from_args(args)
    if cfg.train_path is None:
        raise CommandError("--train-path is required")
    from stackft.training.preflight import check_config

    return check_config(cfg)


# -- commands ----------------------------------------------------------------------------------------

def add_command(subparsers, name: str, func, **kwargs) -> argparse.ArgumentParser:
    """A subcommand parser whose ``func(args) -> int`` (the exit code) :func:`run` calls."""
    p = subparsers.add_parser(name, **kwargs)
    p.set_defaults(func=func, command_prog=p.prog)
    return p


def command_parser(*registers) -> Parser:
    """The ``stackft`` parser with the commands that each ``register(subparsers)`` adds."""
    from stackft import __version__

    p = Parser(prog="stackft", description="Stack-and-finetune training of BERT-style encoders")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for register in registers:
        register(sub)
    return p


def run(parser: argparse.ArgumentParser, argv=None) -> int:
    """Parse ``argv`` and run its command; a CommandError, bad data or a missing file is one line, exit 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parser.parse_args(argv)
    prog = getattr(args, "command_prog", None) or f"stackft {args.command}"
    try:
        with one_line_warnings(prog):
            return args.func(args)
    except ConfigError as exc:  # a setting (option) that cannot work here: named as the option
        print(f"{prog}: error: {exc.cli_message()}", file=sys.stderr)
        return 2
    except (CommandError, OSError, ValueError, ImportError) as exc:
        # DataError and CheckpointError are ValueErrors, a missing file, a full disk or a lock timeout an
        # OSError, a missing optional package an ImportError (its message has the pip command): bad input or
        # a bad environment ends with one clear line, not a traceback
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, ImportError) and "pip install" not in msg and getattr(exc, "name", None):
            msg += f" (pip install {exc.name.split('.')[0]})"
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 2


@contextlib.contextmanager
def one_line_warnings(prog: str):
    """Python warnings as ``<prog>: warning: <message>``, one line, without the source line that raised them."""
    def format_warning(message, category, filename, lineno, line=None):
        text = " ".join(str(message).split())
        return f"{prog}: warning: {text}\n"

    saved = warnings.formatwarning
    warnings.formatwarning = format_warning
    try:
        yield
    finally:
        warnings.formatwarning = saved
