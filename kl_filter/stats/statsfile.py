"""The reference-statistics file (:mod:`.reference` computes it): :class:`Stats`, written by :func:`save_stats`,
read back by :func:`load_stats` with every member's header checked before its data is inflated, and refused for
another pool; a file's per-shard partials live in :func:`parts_dir_for` while it is computed.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass

import numpy as np

from kl_filter.core.atomic import write_bytes
from kl_filter.core.errors import KLFilterError
from kl_filter.core.fspath import url_to_fs
from kl_filter.core.npyfile import NpzReader, check_plain_dtype, check_regular_file, read_errors
from kl_filter.core.uids import UID_DTYPE
from kl_filter.pool import EMBED_DIMS, Pool

log = logging.getLogger(__name__)
MODS = ("img", "txt")


@dataclass
class Stats:
    arrays: dict
    path: str | None = None

    def __getitem__(self, k):
        return self.arrays[k]

    @property
    def fingerprint(self) -> str:
        return str(self.arrays["pool_fingerprint"])

    def _digest(self, keys) -> str | None:
        import hashlib

        keys = sorted(k for k in keys if k in self.arrays)
        if not keys:
            return None
        h = hashlib.sha256()
        for k in keys:
            h.update(k.encode())
            h.update(np.ascontiguousarray(self.arrays[k]).tobytes())
        return h.hexdigest()[:16]

    @property
    def archs(self) -> list[str]:
        return [str(a) for a in self.arrays.get("archs", [])]

    def samples_id(self, arch: str) -> str | None:
        """Content hash of one family's reference samples (what its D_KL and D_KLR depend on)."""
        return self._digest([f"{arch}_{m}_sample" for m in MODS])

    def moments_id(self, arch: str) -> str | None:
        """Content hash of one family's means and covariances (what its D_C and D_W depend on)."""
        return self._digest([f"{arch}_{m}_{k}" for m in MODS for k in ("mean", "cov")])

    def has_moments(self, arch: str) -> bool:
        return self.moments_id(arch) is not None

    def sampling(self) -> dict:
        """The parameters the samples were drawn with (a managed file is redrawn when they change).

        ``num_samples`` is the N that was asked for (``num_samples_asked``; files older than that field hold only
        the N drawn, which is the same unless fewer rows passed the caption filter than were asked for)."""
        asked = int(self.arrays.get("num_samples_asked", -1))
        return {"seed": int(self.arrays["seed"]),
                "num_samples": asked if asked > 0 else int(self.arrays["num_samples"]),
                "sample_ratio": float(self.arrays["sample_ratio"]), "caption_filter": bool(self.arrays["caption_filter"])}

    def num_samples(self, arch: str, mod: str) -> int:
        return int(self.arrays[f"{arch}_{mod}_sample"].shape[0])


SMALL_MEMBER_BYTES = 1 << 20  # bytes: the largest scalar or string member of a statistics file or partial


def check_member(h, key: str, shape=None, kinds: str = "biufU", allowed=(), max_bytes: int | None = None) -> None:
    """A member's header against what it must be (before its data is inflated); ValueError naming the member."""
    try:
        check_plain_dtype(h, kinds, allowed)
    except ValueError as e:
        raise ValueError(f"member {key!r}: {e}") from e
    if shape is not None and (len(shape) != len(h.shape) or any(w is not None and w != g for w, g in zip(shape, h.shape))):
        raise ValueError(f"member {key!r} has shape {h.shape}, expected {tuple('k' if w is None else w for w in shape)}")
    if max_bytes is not None and h.nbytes > max_bytes:
        raise ValueError(f"member {key!r} claims shape {h.shape} ({h.nbytes:,} bytes), more than it can hold")


def remove_parts_dir(parts_dir: str) -> None:
    """Remove a statistics file's partials directory (written only by this module)."""
    fs, p = url_to_fs(parts_dir)
    try:
        if fs.exists(p):
            fs.rm(p, recursive=True)
    except OSError as e:
        log.warning("could not remove %s (%s)", parts_dir, e)


def parts_dir_for(path: str) -> str:
    """Where a statistics file's per-shard partials live while it is being computed."""
    return path + ".parts"


def save_stats(path: str, stats: Stats, remove_parts: bool = True) -> None:
    buf = io.BytesIO()
    np.savez(buf, **stats.arrays)
    write_bytes(path, buf.getvalue())
    stats.path = path
    if remove_parts:  # the final file is complete: the partials are no longer needed
        remove_parts_dir(parts_dir_for(path))


_STATS_KEY = re.compile(r"^([a-z0-9]+)_(img|txt)_(sample|sample_uids|mean|cov)$")


def _read_stats_arrays(f, size: int) -> dict:
    """Every member of a statistics file, each header checked before its data is inflated: the scalars and
    strings are small; samples are ``(k, width)`` floats with ``k`` at most the pool rows the file records, their
    uids ``(k,)`` of ``u8,u8``, means ``(width,)`` and covariances ``(width, width)`` floats."""
    with NpzReader(f, size) as z:
        big = {k: _STATS_KEY.match(k) for k in z.files}
        arrays = {k: z.read(k, check=lambda h, k=k: check_member(h, k, max_bytes=SMALL_MEMBER_BYTES)) for k in z.files if not big[k]}
        # samples have at most the pool's rows (without that record, the zip's own bound on inflation holds)
        rows = int(arrays["pool_rows"]) if "pool_rows" in arrays and np.ndim(arrays["pool_rows"]) == 0 else 2**62
        for k, m in big.items():
            if not m:
                continue
            arch, _, what = m.groups()
            h = z.header(k)
            d = EMBED_DIMS.get(arch, h.shape[-1] if h.shape else 0)
            if what == "sample":
                shape, kinds, allowed = (h.shape[0] if h.shape else -1, d), "f", ()
                if h.shape and h.shape[0] > rows:
                    raise ValueError(f"member {k!r} has {h.shape[0]} rows, the pool {rows}")
            elif what == "sample_uids":
                shape, kinds, allowed = (h.shape[0] if h.shape else -1,), "", (UID_DTYPE,)
                if h.shape and h.shape[0] > rows:
                    raise ValueError(f"member {k!r} has {h.shape[0]} rows, the pool {rows}")
            else:
                shape, kinds, allowed = ((d,) if what == "mean" else (d, d)), "f", ()
            arrays[k] = z.read(k, check=lambda h, k=k, s=shape, kd=kinds, a=allowed: check_member(h, k, s, kd, a))
    return arrays


def load_stats(path: str, pool: Pool | None = None, archs=(), moments: bool = False,
               remedy: str = "recompute them with `kl-filter stats`") -> Stats:
    """Load a statistics file; refuse one made for another pool (the message ends with ``remedy``: what the
    user can do) or lacking a needed family (or, with ``moments``, lacking the mean and covariance)."""
    fs, p = url_to_fs(path)
    try:
        size = check_regular_file(fs, p, "statistics file")
    except KLFilterError as e:
        if "no such" in str(e):
            raise KLFilterError("statistics file not found", path) from e
        raise
    try:
        with fs.open(p, "rb") as f:
            arrays = _read_stats_arrays(f, size)
    except FileNotFoundError as e:
        raise KLFilterError("statistics file not found", path) from e
    except read_errors() as e:
        raise KLFilterError(f"not a statistics .npz ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})",
                            path) from e
    if "pool_fingerprint" not in arrays:
        raise KLFilterError("not a kl-filter statistics file (no pool_fingerprint)", path)
    stats = Stats(arrays, path)
    if pool is not None and stats.fingerprint != pool.fingerprint:
        raise KLFilterError(f"statistics were computed on another pool (fingerprint {stats.fingerprint}, "
                            f"this pool {pool.fingerprint}; was the pool changed?): {remedy}", path)
    for arch in archs:
        for mod in MODS:
            k = f"{arch}_{mod}_sample"
            if k not in arrays:
                raise KLFilterError(f"statistics lack {k!r} (computed for --arch {list(arrays.get('archs', []))})", path)
            if arrays[k].shape[1] != EMBED_DIMS[arch]:
                raise KLFilterError(f"{k!r} has dimension {arrays[k].shape[1]}, expected {EMBED_DIMS[arch]}", path)
            if moments and f"{arch}_{mod}_cov" not in arrays:
                raise KLFilterError(f"statistics lack the mean/covariance for {arch}_{mod} (computed without "
                                    "moments: rerun `kl-filter stats` without --no_moments)", path)
    return stats
