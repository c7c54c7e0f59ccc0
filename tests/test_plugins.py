"""A third-party filter installed through the ``kl_filter.filters`` entry-point group."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from kl_filter.core.uids import u8u8_to_hex
from kl_filter.testing import FilterContract, ScorerContract
from minipool import make_minipool

PLUGIN = '''
import numpy as np
from kl_filter import Filter, Keep


class LongCaption(Filter):
    """Keep captions longer than --min_chars characters (a third-party plugin)."""

    name = "long_caption"
    columns = ("text",)

    def __init__(self, min_chars: int = 20):
        self.min_chars = int(min_chars)

    def score(self, shard):
        return {"long": np.array([len(t) >= self.min_chars for t in shard["text"].to_pylist()])}

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


TOY = '''from kl_filter import Filter, Top


class Toy(Filter):
    """Keep rows whose L/14 CLIP score is at least --cut."""

    name = "toy"
    columns = ("clip_l14_similarity_score",)

    def __init__(self, cut: float = 0.5):
        self.cut = cut

    def score(self, shard):
        return {"s": shard["clip_l14_similarity_score"]}

    def rules(self):
        return [Top("s", threshold=self.cut)]
'''


@pytest.fixture(scope="module")
def toy_site(tmp_path_factory):
    """The issue's exact plugin as its own distribution, installed by pip (entry point toy = toyplug:Toy)."""
    root = tmp_path_factory.mktemp("toyplug")
    (root / "toyplug.py").write_text(TOY)
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "toyplug"\nversion = "0.1"\n\n'
        '[project.entry-points."kl_filter.filters"]\ntoy = "toyplug:Toy"\n\n'
        '[tool.setuptools]\npy-modules = ["toyplug"]\n')
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(root)], check=True, capture_output=True)
    return {"PYTHONPATH": str(site)}


def test_toy_plugin_from_its_own_distribution(tmp_path, toy_site):
    pool = make_minipool(tmp_path / "pool", shards=3)
    out = tmp_path / "toy.npy"
    run_cli("select", "--name", "toy", "--cut", "0.3", "--metadata_dir", pool, "--save_path", out, "--no_progress",
            env=toy_site, check=True)
    cols = [pq.read_table(f"{pool}/{s:08d}.parquet").to_pandas() for s in range(3)]
    df = pd.concat(cols)
    want = np.sort(df.uid[df.clip_l14_similarity_score >= np.float32(0.3)].to_numpy())
    got = np.array([u.decode() for u in u8u8_to_hex(np.load(out))])
    assert 0 < len(got) < len(df) and np.array_equal(got, want)
    side = json.loads((tmp_path / "toy.npy.json").read_text())
    assert side["params"] == {"cut": 0.3} and side["removed"] == [
        {"step": "top s >= 0.3", "kind": "rule", "removed": len(df) - len(want)}]
    bad = run_cli("select", "--name", "toy", "--cut", "abc", "--metadata_dir", pool, "--save_path", tmp_path / "b.npy",
                  env=toy_site)
    assert bad.returncode == 2 and bad.stderr.strip() == "kl-filter: error: --cut: expected a number, got 'abc'"
    assert not (tmp_path / "b.npy").exists()
    listed = run_cli("list-filters", "-v", env=toy_site, check=True).stdout
    assert "--cut float (default 0.5)  Keep rows whose L/14 CLIP score is at least --cut." in listed


@pytest.mark.parametrize("args, message", [
    (["--name", "laion2b", "--fraction", "0.3"], "--fraction not used by --name laion2b (it takes: no options)"),
    (["--name", "clip_score", "--fraction", "0.3"], "--name clip_score needs --arch"),
    (["--name", "clip_score", "--arch", "h14", "--fraction", "0.3"],
     "--arch (--name clip_score): must be one of b32, l14, got 'h14'"),
    (["--name", "kl", "--fraction", "0.3", "--num_bins", "2.5"], "--num_bins: expected an integer, got '2.5'"),
    (["--name", "kl", "--fraction", "0.3", "--ties", "all"], "--ties (--name kl): must be one of keep, exact, got 'all'"),
    (["--name", "kl", "--uniform"], "kl filter needs exactly one of --fraction or --threshold"),
    # combinations that would silently ignore a flag, and values outside their range
    (["--name", "kl", "--fraction", "0.3", "--uniform", "--reverse"], "--reverse does not apply with --uniform"),
    (["--name", "kl", "--threshold", "3", "--ties", "exact"], "--ties exact does not apply with --threshold"),
    (["--name", "kl", "--fraction", "0.3", "--logit_scale", "-1"], "--logit_scale must be a positive number, got -1.0"),
    (["--name", "kl", "--fraction", "0.3", "--uniform", "--num_bins", "10000000000"],
     "--num_bins must be in [1, 10,000,000], got 10000000000"),
    (["--name", "kl", "--fraction", "0.3", "--num_samples", "0"],
     "--num_samples must be >= 1 and --sample_ratio in (0, 1], got 0 and None"),
    (["--name", "no_filter", "--seed", "-3"], "--seed must be in [0, 2**63), got -3"),
])
def test_flags_are_checked_from_the_signature(tmp_path, args, message):
    pool = make_minipool(tmp_path / "pool")
    p = run_cli("select", *args, "--metadata_dir", pool, "--save_path", tmp_path / "u.npy")
    assert p.returncode == 2 and p.stderr.strip() == f"kl-filter: error: {message}", p.stderr
    assert not (tmp_path / "u.npy").exists()


@pytest.mark.parametrize("params, message", [
    ("{arch: l14, fraction: '0.3'}", "--fraction (--name clip_score): expected float, got str '0.3'"),
    ("{arch: l14, fraction: 0.3, cut: 1}", "--cut not used by --name clip_score (it takes: --arch, --fraction, --threshold)"),
    ("{mode: kl, fraction: 0.3, english_filter: 'false'}", "--english_filter (--name kl): expected bool, got str 'false'"),
    ("{mode: kl, fraction: 0.3, num_bins: true}", "--num_bins (--name kl): expected int, got bool True"),
])
def test_recipe_keys_are_checked_from_the_signature(tmp_path, params, message):
    pool = make_minipool(tmp_path / "pool")
    name = "kl" if "mode" in params else "clip_score"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: {name}\nparams: {params}\n")
    p = run_cli("run", recipe, "--metadata_dir", pool, "--save_path", tmp_path / "u.npy")
    assert p.returncode == 2 and p.stderr.strip() == f"kl-filter: error: {recipe}: {message}", p.stderr
    assert not (tmp_path / "u.npy").exists()


def test_library_api_is_the_plugin_api():
    import kl_filter
    from kl_filter import Filter, Keep, Top, Uniform, build_filter

    assert {"Filter", "Top", "Keep", "Uniform", "Scorer", "StatsNeed"} <= set(kl_filter.__all__)
    flt = build_filter("clip_score", {"arch": "b32", "fraction": 0.3})
    assert isinstance(flt, Filter) and flt.rules() == [Top("clip_b32_similarity_score", fraction=0.3)]
    assert Keep("x") != Uniform("x", 0.5)


def test_recipe_flags_supply_what_the_file_leaves_out(tmp_path):
    """Flags beside a recipe are merged before the filter is built (a recipe may leave a required value out)."""
    pool = make_minipool(tmp_path / "pool")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: clip_score\nparams: {fraction: 0.3}\n")
    run_cli("run", recipe, "--arch", "b32", "--metadata_dir", pool, "--save_path", tmp_path / "a.npy",
            "--no_progress", check=True)
    run_cli("select", "--name", "clip_score", "--arch", "b32", "--fraction", "0.3", "--metadata_dir", pool,
            "--save_path", tmp_path / "b.npy", "--no_progress", check=True)
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    p = run_cli("run", recipe, "--metadata_dir", pool, "--save_path", tmp_path / "c.npy")
    assert p.returncode == 2 and p.stderr.strip() == f"kl-filter: error: {recipe}: --name clip_score needs --arch"


SCORER = '''from typing import Literal

import numpy as np

from kl_filter import Scorer


class CaptionLength(Scorer):
    """Caption length per row (a third-party scorer).

    per: count characters or whitespace-separated words
    """

    name = "caption_length"
    columns = ("text",)

    def __init__(self, per: Literal["char", "word"] = "char"):
        self.per = per

    def outputs(self):
        return (f"caption_{self.per}s",)

    def compute(self, shard, stats, device="cpu"):
        texts = shard["text"].to_pylist()
        n = [len(t) if self.per == "char" else len(t.split()) for t in texts]
        return {self.outputs()[0]: np.array(n, np.float32)}
'''


def test_third_party_scorer_without_a_filter(tmp_path):
    """A scorer installed as its own distribution (entry point ``kl_filter.scorers``) is a filter, a recipe's cut
    and a ``score`` target with no wrapper class."""
    root = tmp_path / "lenplug"
    root.mkdir()
    (root / "lenplug.py").write_text(SCORER)
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "lenplug"\nversion = "0.1"\n\n'
        '[project.entry-points."kl_filter.scorers"]\ncaption_length = "lenplug:CaptionLength"\n\n'
        '[tool.setuptools]\npy-modules = ["lenplug"]\n')
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(root / "site"), str(root)], check=True, capture_output=True)
    env = {"PYTHONPATH": str(root / "site")}
    pool = make_minipool(tmp_path / "pool", shards=2, n=300)
    from minipool import TEXTS

    texts = [TEXTS[i % len(TEXTS)] for i in range(300)] * 2
    uids = np.array([f"{i:032x}" for i in range(600)])

    def kept(path):
        return np.array(sorted(u.decode() for u in u8u8_to_hex(np.load(path))))

    listed = run_cli("list-filters", "-v", env=env, check=True).stdout
    assert "caption_length" in listed and "--per {char,word} (default 'char')  count characters or" in listed
    run_cli("select", "--name", "caption_length", "--per", "word", "--fraction", "0.3", "--metadata_dir", pool,
            "--save_path", tmp_path / "a.npy", "--no_progress", env=env, check=True)
    words = np.array([len(t.split()) for t in texts], np.float32)
    assert np.array_equal(kept(tmp_path / "a.npy"), np.sort(uids[words >= -np.sort(-words)[int(600 * 0.3)]]))
    (tmp_path / "r.yaml").write_text("cuts:\n  - {score: {name: caption_length, params: {per: char}}, fraction: 0.5}\n"
                                     "  - {score: {name: caption_length, params: {per: word}}, fraction: 0.5, "
                                     "then: survivors}\n")
    run_cli("run", tmp_path / "r.yaml", "--metadata_dir", pool, "--save_path", tmp_path / "b.npy", "--scores_dir",
            tmp_path / "s", "--no_progress", env=env, check=True)
    chars = np.array([len(t) for t in texts], np.float32)
    first = chars >= -np.sort(-chars)[300]
    second = words >= -np.sort(-words[first])[int(first.sum() * 0.5)]
    assert np.array_equal(kept(tmp_path / "b.npy"), np.sort(uids[first & second]))
    run_cli("score", "--scorer", "caption_length", "--per", "char", "word", "--metadata_dir", pool, "--out",
            tmp_path / "s", "--no_progress", env=env, check=True)
    got = pq.read_table(tmp_path / "s" / "00000001.parquet")
    assert got.column("caption_words").to_numpy().tolist() == words[300:].tolist()
    assert got.column("caption_chars").to_numpy().tolist() == chars[300:].tolist()


def plugin_module(name: str, source: str):
    """A plugin's module as its distribution installs it, built from its source text in this process."""
    module = types.ModuleType(name)
    exec(compile(source, f"{name}.py", "exec"), module.__dict__)
    return module


# the conformance suite each plugin's author runs (kl_filter.testing): a few lines per plugin
class TestCaptionLengthConforms(ScorerContract):
    scorer = plugin_module("lenplug", SCORER).CaptionLength
    params = {"per": "word"}
    changed_params = {"per": "char"}


class TestLongCaptionConforms(FilterContract):
    filter = plugin_module("kl_long_caption", PLUGIN).LongCaption
    params = {"min_chars": 25}
