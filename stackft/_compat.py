"""Old import paths (stackft 0.1's flat layout), kept working for one release.

``import stackft.trainer`` (and every other module that moved in 0.2) still works: a meta-path
finder maps the old name to the module's new home, returns that very module object (so
``monkeypatch.setattr`` on either name patches the same module) and warns once per old name
with a :class:`DeprecationWarning`. The table is the whole contract; see CHANGELOG.md.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

#: old module -> new module. Names moved out of a split module are re-exported by the new one.
MOVED = {
    "stackft.encoders": "stackft.modeling.encoders",
    "stackft.model": "stackft.modeling.model",
    "stackft.pet": "stackft.modeling.pet",
    "stackft.heads": "stackft.modeling.heads",
    "stackft.trainer": "stackft.training.trainer",
    "stackft.strategies": "stackft.training.strategies",
    "stackft.stopper": "stackft.training.stopper",
    "stackft.optim": "stackft.training.optim",
    "stackft.metrics": "stackft.training.metrics",
    "stackft.checkpoint": "stackft.training.checkpoint",
    "stackft.evaluate": "stackft.training.evaluation",
    "stackft.cache_features": "stackft.cache.source",
    "stackft.prefetch": "stackft.cache.prefetch",
    "stackft.ops": "stackft.cache.ops",
    "stackft.trials": "stackft.studies",
    "stackft.ensemble": "stackft.studies.ensemble",
    "stackft.plots": "stackft.studies.plots",
    "stackft.demo": "stackft.studies.demo",
    "stackft.cli_cache": "stackft.cli.cache",
    "stackft.cli_trials": "stackft.cli.trials",
}


def new_name(old: str) -> str | None:
    """The new module name for an old one (submodules of a moved package included), else None."""
    for prefix in sorted(MOVED, key=len, reverse=True):
        if old == prefix or old.startswith(prefix + "."):
            return MOVED[prefix] + old[len(prefix):]
    return None


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, old: str, new: str):
        self.old, self.new = old, new

    def create_module(self, spec):
        return None  # a placeholder; exec_module swaps in the real module

    def exec_module(self, module):
        real = importlib.import_module(self.new)
        warnings.warn(f"{self.old} moved to {self.new}; the old name goes away in stackft 0.3",
                      DeprecationWarning, stacklevel=2)
        # the import system returns whatever sys.modules holds under the name after exec_module
        sys.modules[self.old] = real


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new = new_name(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(fullname, new))


def install() -> None:
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())  # first: a moved package's __path__ must not load a second copy
