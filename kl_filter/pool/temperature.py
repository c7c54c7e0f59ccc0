"""The embedding models' temperatures, recorded beside the pool: ``METADATA_DIR/embeddings.json``.

A CLIP similarity is a log density ratio only at the temperature the model learned:
``log p(t|x) / p(t) = a·<u_x, u_t> + const`` with ``a`` the model's own logit scale
(docs/methods.md#the-temperature-density-ratios-at-the-models-own-logit-scale). So every
density-ratio score (D_KL, D_KLR, negCLIPLoss, IWL's weights) must be computed at the scale of the model that
made the pool's embeddings. ``kl-filter embed`` writes it here, one entry per embedding family::

    {"format": 1,
     "families": {"l14": {"model": "ViT-L-14", "checkpoint": "/models/l14.pt", "embed_dim": 768,
                          "logit_scale": 100.0, "logit_bias": null}}}

* ``logit_scale``: ``exp(model.logit_scale)`` as the checkpoint holds it (the learned ``a``); a finite number > 0.
* ``logit_bias``: the learned bias ``b`` of sigmoid-loss models (SigLIP: ``a·<u_x, u_t> + b``), else null. It is
  recorded and shown, but no score here depends on it: D_KL, D_KLR and negCLIPLoss normalise over samples and
  IWL's weights are self-normalised, so a constant ``b`` cancels in every one of them.

A pool without the file, or a family the file does not list, is DataComp's: embedded by OpenAI's CLIP, which
learned ``a = 100`` (the logit scale is clamped at 100 in training and OpenAI's models sit at the clamp).
Any other key in an entry is kept as written. The file is read by :mod:`kl_filter.core.inputs` (a regular file of at
most 1 MiB, UTF-8, nested at most 8 levels, no recursion while parsing); one that is not valid JSON, does not
have this structure, or gives a scale that is not a finite number in :data:`LOGIT_SCALE_RANGE` stops every
command that would read it (one line naming the file, exit 2): a wrong temperature silently changes every
density-ratio ranking.

**Why [1, 1000].** Every CLIP-style model starts training at ``a = 1/0.07 ≈ 14.3``; OpenAI's and OpenCLIP's clamp
it at 100 and SigLIP's learn about 110-120 (the tiny track's teachers clamp to [1, 100] and learn 14-31). Far
outside that range the scores degenerate, measured on a 600-row test pool (``--num_samples 20``, a 25% D_KL
cut): at ``a = 1e-3`` 93.5% of the rows tie at 0 (the float32 differences cancel) and at ``a = 1e-10`` and below
every row ties, so the cut keeps 100%; at ``a = 1e4`` 91% and at ``1e6`` all but one row tie at the ``log N``
ceiling (one sample dominates every softmax). A recorded scale outside the range is therefore a broken file or
model and is refused. ``--logit_scale`` outside it is a deliberate choice (an ablation) and is used: below it
with a one-line warning; above it the runner's saturation warning (rows at ``log N``) and IWL's effective-sample
check already say what went wrong.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass

from kl_filter.core.errors import KLFilterError

log = logging.getLogger(__name__)

MANIFEST = "embeddings.json"
FORMAT = 1
OPENAI_LOGIT_SCALE = 100.0
MAX_BYTES = 1 << 20
MAX_DEPTH = 8  # {"families": {name: {key: value}}} is 3 levels; room for a value that is a small object
LOGIT_SCALE_RANGE = (1.0, 1000.0)  # the scales CLIP-style models learn, with room (see the module docstring)


@dataclass(frozen=True)
class Temperature:
    """The logit scale a score uses, and where it came from (recorded with every column that depends on it)."""

    logit_scale: float
    source: str
    logit_bias: float | None = None

    def provenance(self) -> dict:
        return {"logit_scale": self.logit_scale, "logit_scale_source": self.source}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_logit_scale(value, what: str = "--logit_scale", path: str | None = None) -> float:
    """``value`` as a float, or one line: a logit scale must be a finite number > 0."""
    if not _number(value) or not math.isfinite(value) or value <= 0:
        raise KLFilterError(f"{what} must be a positive number, got {value!r}", path)
    return float(value)


def _outside(value: float) -> bool:
    return not LOGIT_SCALE_RANGE[0] <= value <= LOGIT_SCALE_RANGE[1]


def _range_words() -> str:
    return f"[{LOGIT_SCALE_RANGE[0]:g}, {LOGIT_SCALE_RANGE[1]:g}]"


def check_recorded_logit_scale(value, what: str, path: str | None = None) -> float:
    """A model's learned scale (recorded or about to be): a finite number in :data:`LOGIT_SCALE_RANGE`."""
    value = check_logit_scale(value, what, path)
    if _outside(value):
        raise KLFilterError(f"{what} {value:g} is outside {_range_words()}, the scales CLIP-style models learn "
                            "(there density-ratio scores tie: a 25% cut can keep the whole pool); fix the file or "
                            "pass --logit_scale", path)
    return value


def _validate(doc, path: str) -> dict:
    if not isinstance(doc, dict) or not isinstance(doc.get("families", {}), dict):
        raise KLFilterError('not an embeddings manifest (expected {"format": 1, "families": {...}})', path)
    if doc.get("format", FORMAT) != FORMAT or isinstance(doc.get("format"), bool):
        raise KLFilterError(f"embeddings manifest format {doc.get('format')!r}, this version reads {FORMAT}", path)
    families = doc.get("families", {})
    for fam, entry in families.items():
        if not isinstance(entry, dict):
            raise KLFilterError(f"family {fam!r}: expected an object, got {type(entry).__name__}", path)
        check_recorded_logit_scale(entry.get("logit_scale"), f"family {fam!r}: logit_scale", path)
        if not isinstance(entry.get("model", ""), (str, type(None))):
            raise KLFilterError(f"family {fam!r}: model must be a name, got {entry['model']!r:.80}", path)
        bias = entry.get("logit_bias")
        if bias is not None and (not _number(bias) or not math.isfinite(bias)):
            raise KLFilterError(f"family {fam!r}: logit_bias must be a finite number or null, got {bias!r}", path)
    return families


def read_manifest(fs, path: str) -> dict:
    """``{family: entry}`` of the manifest at ``path`` on ``fs`` (``{}`` when there is none), validated."""
    from fsspec.implementations.local import LocalFileSystem

    from kl_filter.core.inputs import load_json

    try:  # a dangling symlink is not "no manifest": the reader names it
        if not (os.path.lexists(path) if isinstance(fs, LocalFileSystem) else fs.exists(path)):
            return {}
    except OSError as e:
        raise KLFilterError(f"cannot check the embeddings manifest ({e})", path) from e
    return _validate(load_json(path, "embeddings manifest", MAX_BYTES, MAX_DEPTH, fs=fs), path)


def family_temperature(pool, family: str) -> Temperature:
    """The recorded temperature of ``family`` in ``pool``, or OpenAI CLIP's ``a = 100`` (said in the source)."""
    entry = pool.temperatures.get(family)
    if entry is None:
        why = f"no {MANIFEST} in the pool" if not pool.temperatures else f"{MANIFEST} does not list {family}"
        return Temperature(OPENAI_LOGIT_SCALE, f"OpenAI CLIP default ({why})")
    model = entry.get("model")
    return Temperature(float(entry["logit_scale"]), f"{MANIFEST}" + (f" ({family}: {model})" if model else ""),
                       None if entry.get("logit_bias") is None else float(entry["logit_bias"]))


_warned: set = set()


def resolve(pool, family: str, override: float | None) -> Temperature:
    """``--logit_scale`` when given (the recorded value is named in the source), else the pool's."""
    recorded = family_temperature(pool, family)
    if override is None:
        return recorded
    note = "" if recorded.source.startswith("OpenAI") else f"; the pool records {recorded.logit_scale:.6g}"
    if float(override) < LOGIT_SCALE_RANGE[0] and float(override) not in _warned:
        _warned.add(float(override))  # once per process, not once per scorer bound
        log.warning("--logit_scale %g is below %g, the least scale CLIP-style models learn: density-ratio scores "
                    "may tie (a fraction cut may keep more rows than asked)", override, LOGIT_SCALE_RANGE[0])
    return Temperature(float(override), f"--logit_scale{note}", recorded.logit_bias)


def record_family(metadata_dir: str, family: str, entry: dict) -> str:
    """Add or replace ``family``'s entry in the local pool's manifest (atomically); returns the manifest path."""
    from kl_filter.core.atomic import write_bytes
    from kl_filter.core.fspath import url_to_fs

    check_recorded_logit_scale(entry.get("logit_scale"), f"the model's logit scale ({family})", metadata_dir)
    path = os.path.join(metadata_dir, MANIFEST)
    fs, p = url_to_fs(path)
    doc = {"format": FORMAT, "families": {**read_manifest(fs, p), family: entry}}
    doc["families"] = dict(sorted(doc["families"].items()))
    write_bytes(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
    return path
