"""A third-party filter installed through the ``kl_filter.filters`` entry-point group."""

import os

import numpy as np

from conftest import run_cli
from minipool import make_minipool

PLUGIN = '''
import numpy as np
from kl_filter.filters import Filter, Keep


class LongCaption(Filter):
    """Keep captions longer than --min_chars characters (a third-party plugin)."""

    name = "long_caption"
    columns = ("text",)

    def __init__(self, min_chars: int = 20):
        self.min_chars = int(min_chars)

    def score(self, data):
        return {"long": np.array([len(t) >= self.min_chars for t in data.columns["text"].to_pylist()])}

    def rules(self):
        return [Keep("long")]
'''


def install_plugin(site):
    """What pip does for a package declaring the entry point: module + dist-info with entry_points.txt."""
    os.makedirs(site / "kl_long_caption-0.1.dist-info")
    (site / "kl_long_caption.py").write_text(PLUGIN)
    (site / "kl_long_caption-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: kl-long-caption\nVersion: 0.1\n")
    (site / "kl_long_caption-0.1.dist-info" / "entry_points.txt").write_text(
        "[kl_filter.filters]\nlong_caption = kl_long_caption:LongCaption\n")


def test_entry_point_plugin_is_listed_and_runs(tmp_path):
    site = tmp_path / "site"
    install_plugin(site)
    pool = make_minipool(tmp_path / "pool")
    env = {"PYTHONPATH": str(site)}
    listed = run_cli("list-filters", env=env, check=True).stdout
    assert "long_caption" in listed and "Keep captions longer than" in listed
    out = tmp_path / "u.npy"
    run_cli("select", "--name", "long_caption", "--metadata_dir", pool, "--save_path", out, env=env, check=True)
    assert len(np.load(out)) == 2 * sum(len(t) >= 20 for t in __import__("minipool").TEXTS) * 50
    # plugin parameters without a built-in flag come from a recipe
    recipe = tmp_path / "long.yaml"
    recipe.write_text("name: long_caption\nparams:\n  min_chars: 25\n")
    run_cli("run", recipe, "--metadata_dir", pool, "--save_path", out, "--no_progress", env=env, check=True)
    from minipool import TEXTS

    kept = np.load(out)
    expected = sum(len(TEXTS[i % len(TEXTS)]) >= 25 for i in range(300)) * 2
    assert len(kept) == expected > 0


def test_unknown_name_without_plugin(tmp_path):
    pool = make_minipool(tmp_path / "pool")
    p = run_cli("select", "--name", "long_caption", "--metadata_dir", pool, "--save_path", tmp_path / "u.npy")
    assert p.returncode == 2 and "unknown filter --name 'long_caption'" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "u.npy").exists()
