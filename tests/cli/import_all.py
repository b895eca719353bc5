"""Import every module of the packages named on the command line (in the venv that runs it);
print each failure as ``module: error``. Run by test_wheels.py inside freshly built venvs."""

from __future__ import annotations

import importlib
import pkgutil
import sys

failed = []
for name in sys.argv[1:]:
    package = importlib.import_module(name)
    for info in pkgutil.walk_packages(package.__path__, name + "."):
        leaf = info.name.rsplit(".", 1)[-1]
        if leaf.startswith("test_") or leaf in ("_testkit", "conftest", "__main__"):
            continue
        try:
            importlib.import_module(info.name)
        except BaseException as exc:
            failed.append(f"{info.name}: {type(exc).__name__}: {str(exc)[:100]}")
print("\n".join(failed))
