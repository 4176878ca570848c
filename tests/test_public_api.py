"""The public import surface: ``import stackft`` is light, and the 0.1 import paths still work (and warn)."""

import subprocess
import sys
import warnings

import pytest


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code],
                          capture_output=True, text=True, timeout=120)


def test_import_stackft_does_not_import_torch():
    r = _run("import stackft, sys; assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]")
    assert r.returncode == 0, r.stderr[-2000:]


def test_old_module_path_warns_and_is_the_new_module():
    r = _run("import stackft.trainer")
    assert r.returncode != 0 and "DeprecationWarning" in r.stderr  # it warns (an error under -W error)
    assert "stackft.training.trainer" in r.stderr

    code = """
import sys, warnings
with warnings.catch_warnings(record=True) as rec:
    warnings.simplefilter("always")
    import stackft.trainer as old
import stackft.training.trainer as new
assert old is new, (old, new)
assert sys.modules["stackft.trainer"] is new
moved = [w for w in rec if issubclass(w.category, DeprecationWarning) and "stackft.trainer" in str(w.message)]
assert len(moved) == 1, [str(w.message) for w in rec]
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_old_class_path_is_the_same_class():
    with pytest.warns(DeprecationWarning, match="stackft.heads"):
        sys.modules.pop("stackft.heads.bimpm", None), sys.modules.pop("stackft.heads", None)
        from stackft.heads.bimpm import BiMPMHead as Old
    from stackft.modeling.heads.bimpm import BiMPMHead as New

    assert Old is New
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        import stackft.modeling.heads.bimpm  # noqa: F401  (the new path never warns)
