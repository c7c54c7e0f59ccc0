"""Target embeddings for NormSim and VAS: files a user gives with ``--target_embeddings``, read once per process.

Accepted files: ``.npy`` matrices (float16 or float32, N_t × D, read by :mod:`kl_filter.core.inputs`: a regular file
whose header is checked before anything is allocated, never unpickled) and DataComp's
``in1k_clip_vit_l14_{0..4}.pt`` ImageNet-1k image-feature files (dicts holding ``image_features``), read by
:func:`kl_filter.core.inputs.load_array`, which unpickles nothing but tensors and plain containers.
Every file is checked on its own (non-empty, 2-d, the family's width, finite, unit norm within
:data:`kl_filter.pool.reader.NORM_TOLERANCE`); a bad one is one :class:`KLFilterError` line naming it.

Record shape: :class:`Targets` = the files' float32 matrices in the order given (``parts``, never concatenated:
ImageNet-1k's 1.28M L/14 features are 3.9 GB in float32, and one copy is enough) + ``digest``, a content hash
over the float32 bytes and shapes. The digest is the provenance of every score column computed from the
targets: an edited file recomputes the columns, a renamed or moved one reuses them.
"""

from __future__ import annotations

import hashlib
import os
import threading

import numpy as np

from kl_filter.core.errors import KLFilterError
from kl_filter.pool.reader import EMBED_DIMS, NORM_TOLERANCE

HINT = ("needs --target_embeddings FILE [FILE ...]: .npy matrices (N_t x D, unit-norm rows) or DataComp's "
        "ImageNet-1k features in1k_clip_vit_l14_{0..4}.pt (see the README)")
_GRAM_BLOCK = 1024  # targets per float32 product folded into the float64 Gram matrix


class Targets:
    """Validated target embeddings of one family (see the module docstring)."""

    def __init__(self, parts: tuple, digest: str):
        self.parts = parts            # float32 (n_f, D) per file, in the order given
        self.digest = digest          # 16 hex digits
        self._gram = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def gram(self) -> np.ndarray:
        """G = Σ_k t_k t_kᵀ (float64 D × D), from float32 products of 1024-target blocks summed in float64;
        computed on first use with one BLAS thread (the same bits for any thread count)."""
        from kl_filter.engines import single_blas_thread

        with self._lock:
            if self._gram is None:
                d = self.parts[0].shape[1]
                g = np.zeros((d, d), np.float64)
                with single_blas_thread():
                    for p in self.parts:
                        for i in range(0, len(p), _GRAM_BLOCK):
                            b = p[i: i + _GRAM_BLOCK]
                            g += b.T @ b
                self._gram = g
            return self._gram


_cache: dict = {}   # (files' identities, width) -> Targets; the newest two
_cache_lock = threading.Lock()


def load_targets(paths, arch: str) -> Targets:
    """The validated targets of ``paths`` for family ``arch``, read once per process while the files are
    unchanged (worker threads share one copy)."""
    paths = [os.fspath(p) for p in (paths or ())]
    if not paths:
        raise KLFilterError(f"no target embeddings given (the score {HINT})")
    width = EMBED_DIMS[arch]
    ident = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            raise KLFilterError("target embeddings file not found", p) from None
        ident.append((os.path.realpath(p), st.st_size, st.st_mtime_ns))
    key = (tuple(ident), width)
    with _cache_lock:  # one reader at a time: two threads must not both hold a 4 GB copy
        if key not in _cache:
            parts = tuple(_read(p, arch, width) for p in paths)
            h = hashlib.sha256()
            for part in parts:
                h.update(f"{part.shape}".encode())
                h.update(part.tobytes())
            while len(_cache) >= 2:
                _cache.pop(next(iter(_cache)))
            _cache[key] = Targets(parts, h.hexdigest()[:16])
        return _cache[key]


MAX_TARGET_BYTES = 16 << 30  # a file of one matrix: ImageNet-1k's 1.28M L/14 features are 3.9 GB in float32


def _read(path: str, arch: str, width: int) -> np.ndarray:
    from kl_filter.core.inputs import load_array
    from kl_filter.core.inputs import load_npy

    try:
        if path.endswith(".npy"):  # its header first: a shape the file does not hold is never allocated
            a = load_npy(path, "target embeddings file", [(None, None)], kinds="f", max_bytes=MAX_TARGET_BYTES,
                         finite=False)  # any width and finiteness: checked below, naming the family and the row
        else:
            a = load_array(path, "image_features")
    except KLFilterError as e:
        raise KLFilterError(f"unreadable target embeddings ({str(e).removeprefix(f'{path}: ')})", path) from e
    except Exception as e:  # noqa: BLE001 - numpy/torch readers raise many types; the user needs one line
        raise KLFilterError(f"unreadable target embeddings ({type(e).__name__}: "
                            f"{(str(e).strip().splitlines() or [''])[0][:200]})", path) from e
    if a.ndim != 2 or a.shape[0] == 0:
        raise KLFilterError(f"target embeddings must be a non-empty N_t x D matrix, got shape {a.shape}", path)
    if a.shape[1] != width:
        raise KLFilterError(f"target embeddings have dimension {a.shape[1]}, --arch {arch} needs {width}", path)
    a = np.ascontiguousarray(a, dtype=np.float32)
    for i in range(0, len(a), 65536):
        b = a[i: i + 65536]
        sq = np.einsum("ij,ij->i", b, b)
        bad = np.flatnonzero(~np.isfinite(sq))
        if bad.size:
            raise KLFilterError(f"target embedding row {i + bad[0]} has NaN or inf values", path)
        bad = np.flatnonzero(np.abs(np.sqrt(sq) - 1.0) > NORM_TOLERANCE)
        if bad.size:
            r = int(bad[0])
            raise KLFilterError(f"target embedding row {i + r} has norm {np.sqrt(sq[r]):.4g}, expected unit norm "
                                f"(within {NORM_TOLERANCE}); L2-normalise the rows first", path)
    return a
