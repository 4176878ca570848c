"""The command line's TrainConfig options (types from the annotations, groups, help, choices), one-line
usage and command errors with exit code 2, ``--version``, and what the cli modules may import."""

import ast
import dataclasses
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest

import stackft
from stackft.cli import build_parser, main
from stackft.cli.args import config_from_args
from stackft.config import GROUPS, TrainConfig

PACKAGE = Path(stackft.__file__).resolve().parent
HINTS = typing.get_type_hints(TrainConfig)
FIELDS = dataclasses.fields(TrainConfig)


def _default(f):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def sample_values(f) -> list[tuple[str, object]]:
    """``(text, expected value)`` pairs unlike ``f``'s default, of the kind its annotation asks for.

    Written from the annotation alone, so a new field is covered as soon as it exists, and a field
    of a kind this table (and so, presumably, the parser) does not know fails the test.
    """
    hint, default, choices = HINTS[f.name], _default(f), f.metadata.get("choices")
    if choices:
        return [(str(c), c) for c in choices if c != default][:1]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        kinds = {a for a in args if a is not type(None)}
        if kinds == {int, float}:
            return [("7", 7), ("0.375", 0.375)]
        if len(kinds) == 1:
            (hint,) = kinds
            origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is int:
        return [(str(v), v) for v in [(default or 0) + 7]]
    if hint is float:
        return [("0.375", 0.375)] if default != 0.375 else [("0.25", 0.25)]
    if hint is str:
        return [("some/value", "some/value")]
    if origin is tuple and args == (int, ...):
        return [("-3,-2", (-3, -2)), ("5", (5,))]
    if hint is dict:
        return [('{"a": 1, "b": [2]}', {"a": 1, "b": [2]})]
    pytest.fail(f"TrainConfig.{f.name}: no test value for the annotation {hint!r}")


@pytest.mark.parametrize("f", [f for f in FIELDS if HINTS[f.name] is not bool], ids=lambda f: f.name)
def test_every_field_parses_to_its_annotated_type(f):
    flag = "--" + f.name.replace("_", "-")
    values = sample_values(f)
    assert values, f.name
    for text, want in values:
        cfg = config_from_args(build_parser().parse_args(["train", flag, text]))
        got = getattr(cfg, f.name)
        assert got == want and type(got) is type(want), (f.name, text, got)
        if isinstance(want, tuple):
            assert all(type(a) is type(b) for a, b in zip(got, want))
        others = dataclasses.replace(cfg, **{f.name: _default(f)})
        assert others == TrainConfig(), f"{flag} {text} changed other fields"


@pytest.mark.parametrize("f", [f for f in FIELDS if HINTS[f.name] is bool], ids=lambda f: f.name)
def test_bool_fields_are_on_off_flags(f):
    name = f.name.replace("_", "-")
    for argv, want in ([f"--{name}"], True), ([f"--no-{name}"], False), ([], _default(f)):
        assert getattr(config_from_args(build_parser().parse_args(["train", *argv])), f.name) is want


def test_the_cases_that_used_to_go_wrong():
    p = build_parser()
    cfg = config_from_args(p.parse_args(["train", "--cache-prefetch", "2", "--no-progress", "--layers", "-2,-1",
                                         "--head-options", '{"a": 1}']))
    assert cfg.cache_prefetch == 2 and type(cfg.cache_prefetch) is int
    assert cfg.progress is False and cfg.layers == (-2, -1) and cfg.head_options == {"a": 1}
    for cmd in (["cache", "build"], ["trials", "--out", "x"]):  # the same options elsewhere
        assert config_from_args(p.parse_args([*cmd, "--cache-prefetch", "2"])).cache_prefetch == 2


@pytest.mark.parametrize("argv", [
    ["--cache-prefetch", "two"], ["--max-train", "1.5"], ["--phase1-lr", "fast"], ["--stop-mode", "sometimes"],
    ["--strategy", "stack"], ["--dev-size", "a tenth"], ["--layers", "a,b"], ["--layers", "-1,"],
    ["--head-options", "[1, 2]"], ["--head-options", "{oops"], ["--progress=yes"], ["--cache-dtype", "fp8"],
])
def test_bad_values_are_one_line_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("stackft train: error:"), lines[0]
    assert argv[0].split("=")[0] in lines[0]


@pytest.mark.parametrize("argv, prog, message", [
    (["train"], "stackft train", "--train-path is required"),
    (["cache", "build"], "stackft cache build", "--train-path is required"),
    (["cache", "build", "--train-path", "x.csv", "--cache", "off"], "stackft cache build", "--cache off makes no cache"),
    (["trials", "--out", "study"], "stackft trials", "--train-path is required"),
    (["trials", "--train-path", "x.csv", "--out", "study", "--early-discard", "4,0.5,2", "--phase1-select", "3,1"],
     "stackft trials", "choose --early-discard or --phase1-select, not both"),
])
def test_commands_that_need_a_training_file_fail_the_same_way(argv, prog, message, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err == f"{prog}: error: {message}\n"


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"stackft {stackft.__version__}\n"


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_help_lists_the_groups_choices_and_defaults(capsys):
    text = _help(["train"], capsys)
    positions = [text.index(f"\n{g}:\n") for g in GROUPS]
    assert positions == sorted(positions)
    assert "{finetune-only,stack-only,stack-and-finetune,lp-ft,eh-ft}" in text
    assert "(default: 0.1)" in text and "(default: None)" not in text
    for cmd in (["cache", "build"], ["trials"]):
        sub = _help(cmd, capsys)
        assert all(f"\n{g}:\n" in sub for g in GROUPS), cmd


def test_each_config_option_states_its_default_once():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    by_dest = {a.dest: a for a in train._actions}
    for f in FIELDS:
        action = by_dest[f.name]
        n = action.help.replace("%(default)s", repr(action.default)).lower().count("default")
        assert n == (0 if _default(f) is None and "default" not in f.metadata["help"].lower() else 1), (f.name, action.help)
        assert tuple(action.choices or ()) == tuple(f.metadata.get("choices", ())), f.name


def test_trials_per_trial_options_are_the_study_options(capsys):
    p = build_parser()
    args = p.parse_args(["trials", "--init-seed", "3", "--data-seed", "0-1", "--output-dir", "study"])
    assert (args.init_seeds, args.data_seeds, args.out) == ([3], [0, 1], "study")
    cfg = config_from_args(args)  # the fields each trial sets itself keep their defaults
    assert (cfg.init_seed, cfg.data_seed, cfg.output_dir) == (0, 0, TrainConfig().output_dir)
    text = _help(["trials"], capsys)
    assert "--init-seeds SEEDS, --init-seed SEEDS" in text and "--out OUT, --output-dir OUT" in text


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_command_modules_do_not_import_the_cli_package():
    for name in ("args", "train", "cache", "trials"):
        imported = _imports(PACKAGE / "cli" / f"{name}.py")
        bad = {m for m in imported if m in ("stackft.cli", "stackft.cli.main", "stackft.cli.build_parser")}
        assert not bad, (name, bad)  # the package __init__ imports them, not the other way round


def test_config_imports_only_the_standard_library():
    assert {m.split(".")[0] for m in _imports(PACKAGE / "config.py")} <= set(sys.stdlib_module_names)


def test_building_the_parser_loads_no_torch():
    code = ("import sys; from stackft.cli import build_parser; build_parser(); import stackft.config; "
            "assert 'torch' not in sys.modules, 'torch'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
