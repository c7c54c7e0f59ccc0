"""DataComp's caption rules.

* ``fasttext_token_count``: the number of tokens ``fasttext.tokenize`` returns: words split on space, tab,
  vertical tab, form feed, carriage return, newline and NUL, plus one end-of-sentence token per newline.
  (``fasttext-predict`` does not ship ``tokenize``; this reproduces its C++ ``readWord`` rule.)
* ``caption_filter``: fastText English AND more than one token AND more than 5 characters — the filter
  DataComp's image-based baseline applies and the KL paper applies before drawing reference samples.
"""

from __future__ import annotations

import re

import numpy as np

from kl_filter.text.langid import fasttext_english

_FASTTEXT_SPACE = re.compile(r"[ \n\r\t\v\f\0]+")


def fasttext_token_count(text: str) -> int:
    return sum(1 for w in _FASTTEXT_SPACE.split(text) if w) + text.count("\n")


def cheap_caption_mask(texts) -> np.ndarray:
    """The length conditions of the caption filter (no language ID)."""
    return np.fromiter((len(t) > 5 and fasttext_token_count(t) > 1 for t in texts), dtype=bool, count=len(texts))


def caption_filter(texts, model_path: str | None = None) -> np.ndarray:
    """fastText English AND more than one fastText token AND more than 5 characters."""
    mask = cheap_caption_mask(texts)
    idx = np.flatnonzero(mask)
    if len(idx):
        mask[idx] = fasttext_english([texts[i] for i in idx], model_path)
    return mask
