"""``stackft cache list`` and ``stackft cache clean``: what a cache folder holds, and getting the space back."""

import contextlib
import io
import os

from helpers import write_keyword_csv

from stackft import _fs, cli


def run(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(argv)
    return code, out.getvalue()


def test_list_and_clean(tiny_encoder_dir, tmp_path, monkeypatch):
    root = tmp_path / "caches"
    monkeypatch.setenv("STACKFT_CACHE_DIR", str(root))
    data = write_keyword_csv(tmp_path / "kw.csv", 30)
    code, _ = run(["cache", "build", "--task", "classification", "--train-path", data, "--encoder",
                   str(tiny_encoder_dir), "--device", "cpu", "--no-progress", "--head", "linear"])
    assert code == 0
    (root / "notes").mkdir()  # not a cache: never listed, never deleted
    (root / "notes" / "keep.txt").write_text("mine")
    dead = root / f".train-0123.tmp-999999999@{_fs.host_tag()}-0badc0de"  # an interrupted build of a gone process
    dead.mkdir()
    (dead / "values.bin").write_bytes(b"0" * 100)

    code, listing = run(["cache", "list"])
    assert code == 0
    lines = listing.splitlines()
    assert lines[0] == f"cache folder: {root}"
    names = sorted(line.split()[0] for line in lines[1:-1])
    assert [n.split("-")[0] for n in names] == ["dev", "train"]
    assert all("fp16" in line and "sequences" in line for line in lines[1:-1])
    assert lines[-1].startswith("2 caches, ") and "1 leftovers of interrupted builds" in lines[-1]

    code, out = run(["cache", "clean", "--dry-run"])
    assert code == 0 and "would delete" in out and len(list(root.iterdir())) == 4
    code, out = run(["cache", "clean", "--older-than", "1"])  # built just now: kept; the leftover goes
    assert code == 0 and not dead.exists() and len([p for p in root.iterdir() if p.name != "notes"]) == 2
    code, out = run(["cache", "clean"])
    assert code == 0 and out.splitlines()[-1].startswith("2 folders, freed ")
    assert sorted(p.name for p in root.iterdir()) == ["notes"]
    assert (root / "notes" / "keep.txt").read_text() == "mine"
    code, out = run(["cache", "list", "--cache", str(tmp_path / "nothing-here")])
    assert code == 0 and "empty" in out
    assert os.environ["STACKFT_CACHE_DIR"] == str(root)
