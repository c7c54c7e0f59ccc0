"""Build step: ship the recipes inside the package.

The recipes live in ``baselines/*.yaml`` (their one home in the repository). A regular (non-editable) build copies
them into the package as ``kl_filter/recipes_data/`` with ``index.json`` naming them, so an installed
kl-filter finds every recipe by name and ``kl-filter demo`` can tell when one is missing
(:mod:`kl_filter.recipes`). An editable install reads ``baselines/`` of the checkout directly.
Everything else about the package is in ``pyproject.toml``.
"""

import json
import os

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildWithRecipes(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        src = os.path.join(HERE, "baselines")
        names = sorted(f for f in os.listdir(src) if f.endswith(".yaml")) if os.path.isdir(src) else []
        if not names:
            raise SystemExit(f"{src}: no recipes (*.yaml): refusing to build kl-filter without them")
        dst = os.path.join(self.build_lib, "kl_filter", "recipes_data")
        self.mkpath(dst)
        for n in names:
            self.copy_file(os.path.join(src, n), os.path.join(dst, n))
        with open(os.path.join(dst, "index.json"), "w") as f:
            json.dump([n[: -len(".yaml")] for n in names], f, indent=0)
            f.write("\n")


setup(cmdclass={"build_py": BuildWithRecipes})
