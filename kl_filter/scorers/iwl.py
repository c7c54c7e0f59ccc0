"""Importance weights toward a target domain described by a prompt: the paper's second application (IWL).

CLIP's InfoNCE similarity is a log density ratio (docs/methods.md#why-a-clip-similarity-is-a-density-ratio),
so for a prompt t† ("a photo of food") and an image x
with embeddings x, p = t† of the same CLIP::

    w(x) ∝ p(x | t†) / p(x) = exp(a·<x/|x|, p/|p|> + b) / Z,      log_weight = a·<x/|x|, p/|p|> + b

The authors' conventions (CLIP_Density_Ratio ``iwl/``, the prompt code of their ``clip_sem_info``), followed here:
both embeddings are normalised right before the dot product (the pool's float16 rows are unit only to float16
rounding, so each row is renormalised in float64; the prompt is stored as a float32 unit vector and renormalised
in float64 too), ``a = 10`` and ``b = 0`` (their ``--iwl-logit-scale 10``, ``--iwl-logit-bias`` default 0). The
log-weight is computed in float64 and stored float32; the whole-pool normalisation lives in
:mod:`kl_filter.rules.weights` (``b`` cancels there; the authors' loss uses the raw ``exp(log_weight)``).

``logit_scale``: ``a``. Default 10, the authors': the effective sample size on a DataComp pool embedded by
OpenAI's CLIP stays a large share of the rows. ``pool`` takes the temperature the family's embedding model
learned (recorded with the pool, :mod:`kl_filter.pool.temperature`; OpenAI CLIP's 100 for DataComp pools): the
density ratio the theory defines, but so peaked on a standard pool that the effective sample size check refuses
it (measured: 9.18 rows of 30,000 at a = 100). A number sets ``a``. The value and its source are recorded in
every column's provenance.

Columns (record shape of the score file: ``uid`` + these float32 columns):

* one prompt: ``iwl_{arch}_{id}``;
* several prompts: one column ``iwl_{arch}_{id_k}`` each, or with ``combine`` one column
  ``iwl_{arch}_{combine}_{id}`` of the (P, D) matrix.

``id`` is the first 8 hex digits of the SHA-256 of the unit-normalised float32 embedding's bytes (little-endian,
C order; the (P, D) matrix for a combined column): the same prompt embedding gives the same column whether it
came from ``--prompt`` or ``--prompt_embedding``, and a stored column is reused only when its provenance (scorer,
arch, logit scale, full hashes, combine) matches. ``--combine mean`` is the log of the MEAN OF THE WEIGHTS,
``log (1/P) Σ_k exp(l_k)``: the importance weight of the mixture target (1/P) Σ_k p(x | t_k), since the ratio of a
mixture is the mixture of the ratios (with the symmetric CLIP loss the constant b is shared by all prompts). The
mean of the LOG-weights would be a·<u_x, mean_k p_k>: one prompt at the averaged embedding, a product of the
prompts' conditionals, which ``--prompt_embedding`` of that average already gives. ``--combine max`` is the
largest log-weight (the same for weights or log-weights).
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

import numpy as np

from kl_filter.core.errors import KLFilterError
from kl_filter.core.half import to_float32
from kl_filter.scorers.base import DensityRatio, Scorer

FAMILY_RE = re.compile(r"^[a-z0-9]+$")
DEFAULT_LOGIT_SCALE = 10.0  # the IWL authors' a (their README's --iwl-logit-scale 10), with their bias b = 0
DEFAULT_SOURCE = "the IWL authors' a = 10"
# Rows per float64 block: 256 × 768 × 8 bytes = 1.5 MiB stays in cache from the conversion to the dot products
# (500k rows, one thread: 2.24 s of CPU in 16,384-row blocks of 100 MB, 1.05 s in 256-row blocks). A constant:
# the block's shape never depends on memory, workers or the rows left beyond the shard's own end.
BLOCK_ROWS = 256
Combine = Literal["mean", "max"]


def prompt_hash(emb: np.ndarray) -> str:
    """SHA-256 (hex) of a unit float32 embedding or matrix, as little-endian C-order bytes."""
    return hashlib.sha256(np.ascontiguousarray(emb, dtype="<f4").tobytes()).hexdigest()


def _expected_dim(arch: str) -> int | None:
    from kl_filter.pool.reader import EMBED_DIMS

    return EMBED_DIMS.get(arch)


def check_prompt_matrix(emb, arch: str, source: str) -> np.ndarray:
    """``emb`` as a (P, D) float32 matrix of unit rows, or one line saying what is wrong with it."""
    a = np.asarray(emb)
    if a.dtype.kind not in "fiu" or a.ndim not in (1, 2) or a.size == 0:
        raise KLFilterError(f"a prompt embedding must be a (D,) or (P, D) array of numbers, got shape {a.shape} "
                            f"and dtype {a.dtype}", source)
    a = np.atleast_2d(a.astype(np.float64))
    want = _expected_dim(arch)
    if want is not None and a.shape[1] != want:
        raise KLFilterError(f"prompt embedding has dimension {a.shape[1]}, but {arch}_img is {want}-d", source)
    if not np.isfinite(a).all():
        raise KLFilterError("prompt embedding is not finite (NaN or inf)", source)
    norms = np.linalg.norm(a, axis=1)
    if (norms == 0).any():
        raise KLFilterError(f"prompt embedding row {int(np.flatnonzero(norms == 0)[0])} is all zeros", source)
    return (a / norms[:, None]).astype(np.float32)


MAX_PROMPT_BYTES = 256 << 20  # 40,000 prompts of 768 float64s: far beyond any prompt list


def load_prompt_embedding(path: str, arch: str) -> np.ndarray:
    """A (D,) or (P, D) ``.npy`` file as unit float32 rows, read by :mod:`kl_filter.core.inputs` (a regular file; the
    header's shape, a plain number dtype and its byte count checked before anything is allocated)."""
    from kl_filter.core.inputs import load_npy

    # any width here: check_prompt_matrix names the family's (and says what is not finite)
    arr = load_npy(path, "prompt embedding file", [(None,), (None, None)], kinds="fiu", max_bytes=MAX_PROMPT_BYTES,
                   finite=False)
    return check_prompt_matrix(arr, arch, path)


def encode_prompts(prompts: list[str], model: str, checkpoint: str, model_config=None) -> np.ndarray:
    """Unit float32 text embeddings of ``prompts`` from the text tower of an open_clip model loaded from a LOCAL
    checkpoint, by the same code as ``kl-filter embed`` (:class:`kl_filter.encoders.Embedder`), on the CPU
    (so the bytes, and the column name, do not depend on the machine's GPU)."""
    from kl_filter.encoders import Embedder

    return Embedder(model, checkpoint, device="cpu", model_config=model_config).encode_text(prompts)


class IWLScorer(DensityRatio, Scorer):
    """Log importance weights a·<u_x, p> of each row's image embedding toward a prompt's domain (IWL).

    arch: embedding family whose image embeddings ({arch}_img) are weighted
    prompt: the target domain as text, e.g. "a photo of food"; one column per prompt (needs --model, --checkpoint)
    prompt_embedding: .npy file of the prompt's text embedding, (D,) or (P, D) for several prompts
    model: open_clip architecture of the family's model, to encode --prompt
    checkpoint: LOCAL open_clip checkpoint of --model (nothing is downloaded)
    model_config: open_clip model config json (file or directory) for a custom --model
    combine: several prompts as one column: mean = log of the mean weight (a mixture of the domains), max = largest
    """

    name = "iwl"
    default_logit_scale = DEFAULT_LOGIT_SCALE  # logit_scale: declared (and checked, bound) by DensityRatio
    default_source = DEFAULT_SOURCE

    def __init__(self, arch: str = "l14", prompt: list[str] | None = None, prompt_embedding: str | None = None,
                 model: str | None = None, checkpoint: str | None = None, model_config: list[str] | None = None,
                 combine: Combine | None = None, **temperature):
        super().__init__(**temperature)
        self.arch, self.prompt, self.prompt_embedding = arch, prompt, prompt_embedding
        self.model, self.checkpoint, self.model_config = model, checkpoint, model_config
        self.combine = combine
        self._check_flags()
        if prompt_embedding is not None:
            emb = load_prompt_embedding(prompt_embedding, arch)
        else:
            emb = check_prompt_matrix(encode_prompts(list(prompt), model, checkpoint, model_config), arch,
                                      f"{model} text tower ({checkpoint})")
        self._set_embedding(emb)

    @classmethod
    def from_embedding(cls, embedding, arch: str = "l14", logit_scale: float | str | None = None,
                       combine: Combine | None = None) -> "IWLScorer":
        """A scorer for an embedding already in hand (e.g. encoded by a caller's own model)."""
        self = cls.__new__(cls)
        DensityRatio.__init__(self, logit_scale)
        self.arch, self.prompt, self.prompt_embedding = arch, None, None
        self.model = self.checkpoint = self.model_config = None
        self.combine = combine
        self._check_flags(need_prompt=False)
        self._set_embedding(check_prompt_matrix(embedding, arch, "prompt embedding"))
        return self

    def _check_flags(self, need_prompt: bool = True) -> None:
        if not FAMILY_RE.match(self.arch or ""):
            raise KLFilterError(f"--arch must be an embedding family (lowercase letters and digits), got {self.arch!r}")
        if not need_prompt:
            return
        if (self.prompt is None) == (self.prompt_embedding is None):
            raise KLFilterError("iwl needs exactly one of --prompt TEXT (with --model and --checkpoint) or "
                                "--prompt_embedding P.npy")
        if self.prompt is not None:
            if not self.prompt or any(not isinstance(t, str) or not t.strip() for t in self.prompt):
                raise KLFilterError(f"--prompt needs non-empty text, got {self.prompt!r}")
            if not self.model or not self.checkpoint:
                raise KLFilterError("--prompt needs --model ARCH and --checkpoint PATH (a local open_clip "
                                    "checkpoint whose text tower encodes the prompt)")
        elif self.model or self.checkpoint or self.model_config:
            raise KLFilterError("--model, --checkpoint and --model_config encode --prompt; with --prompt_embedding "
                                "leave them out")

    def _set_embedding(self, emb: np.ndarray) -> None:
        hashes = [prompt_hash(e) for e in emb]
        if len(set(hashes)) != len(hashes):
            raise KLFilterError("the same prompt embedding is given twice")
        self.embedding, self.hashes = emb, hashes
        self.matrix_hash = prompt_hash(emb)
        self.keys = (f"{self.arch}_img",)
        if len(emb) == 1:
            self._columns = (f"iwl_{self.arch}_{hashes[0][:8]}",)
        elif self.combine:
            self._columns = (f"iwl_{self.arch}_{self.combine}_{self.matrix_hash[:8]}",)
        else:
            self._columns = tuple(f"iwl_{self.arch}_{h[:8]}" for h in hashes)

    def outputs(self):
        return self._columns

    def provenance(self, column, stats):
        combined = len(self.embedding) > 1 and self.combine is not None
        prompts = self.hashes if combined else [self.hashes[self._columns.index(column)]]
        return {"scorer": self.name, "arch": self.arch, **self.temperature_provenance(),
                "prompt_sha256": prompts, "combine": self.combine if combined else None,
                "rows": "renormalised"}  # a column stored before the rows were renormalised is recomputed

    def compute(self, shard, stats, device="cpu"):
        x = shard[self.keys[0]]
        p = self.embedding.astype(np.float64)
        p /= np.linalg.norm(p, axis=1, keepdims=True)
        if x.ndim != 2 or x.shape[1] != p.shape[1]:
            raise KLFilterError(f"{self.keys[0]} has shape {x.shape}, the prompt embedding dimension {p.shape[1]}")
        logw = np.empty((len(x), len(p)))
        for lo in range(0, len(x), BLOCK_ROWS):
            xb = x[lo: lo + BLOCK_ROWS]
            # float16 → float32 → float64 is exact both ways and twice as fast as NumPy's float16 → float64
            xb = (to_float32(xb) if xb.dtype == np.float16 else xb).astype(np.float64)
            # ⟨x, p⟩ / ‖x‖: ⟨x/‖x‖, p⟩ up to float64 rounding, without writing the normalised rows (against the
            # old form, 1 of 3M stored float32 values moved by one ulp, measured on 1M rows and 1 or 3 prompts)
            with np.errstate(invalid="ignore", divide="ignore"):  # a zero row: NaN, refused below by name
                logw[lo: lo + BLOCK_ROWS] = (xb @ p.T) / np.sqrt(np.einsum("ij,ij->i", xb, xb))[:, None]
        logw *= self.scale
        if len(p) > 1 and self.combine == "mean":
            m = logw.max(axis=1, keepdims=True)
            logw = (m + np.log(np.exp(logw - m).mean(axis=1, keepdims=True)))
        elif len(p) > 1 and self.combine == "max":
            logw = logw.max(axis=1, keepdims=True)
        out = {}
        for j, c in enumerate(self._columns):
            v = logw[:, j].astype(np.float32)
            bad = np.flatnonzero(~np.isfinite(v))
            if bad.size:  # never a silent NaN/inf score (docs/methods.md#numerics)
                raise KLFilterError(f"log-weight {c} is not finite for {bad.size} rows (row {bad[0]}; an all-zero "
                                    f"or non-finite {self.keys[0]} row?)")
            out[c] = v
        return out

    def describe(self) -> dict:
        """Provenance of the whole scorer, as the weights file and the sidecar record it."""
        return {"scorer": self.name, "arch": self.arch, **self.temperature_provenance(), "combine": self.combine,
                "prompts": self.prompt, "prompt_embedding": self.prompt_embedding,
                "prompt_sha256": self.hashes, "columns": list(self._columns)}
