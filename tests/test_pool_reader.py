"""The pool reader's embedding reads: rows checked once per member content, and reads in cache-sized chunks."""

import pickle

import numpy as np
import pytest

from kl_filter.core.errors import KLFilterError
from kl_filter.pool import reader
from kl_filter.pool.reader import Pool
from minipool import make_minipool, unit


@pytest.fixture()
def counted(monkeypatch):
    calls = []
    real = reader.check_unit_rows
    monkeypatch.setattr(reader, "check_unit_rows", lambda arr, key, path, **kw: (calls.append((key, path)),
                                                                                real(arr, key, path, **kw)))
    return calls


def test_rows_are_checked_once_per_member_content_and_again_when_it_changes(tmp_path, counted):
    make_minipool(tmp_path / "pool", shards=2, n=50)
    pool = Pool(str(tmp_path / "pool"))
    s = pool.shards[0]
    first = pool.read_embeddings(s, ("l14_img", "l14_txt"), 50)
    again = pool.read_embeddings(s, ("l14_img", "l14_txt"), 50)
    assert len(counted) == 2  # one check per member, the second read checked nothing
    assert all(np.array_equal(first[k], again[k]) for k in first)
    pool.read_embeddings(pool.shards[1], ("l14_img",), 50)
    assert len(counted) == 3  # another shard's member is another content

    # the member rewritten with a NaN row (same path, same size): a new CRC, so checked again, and refused
    with np.load(s.npz) as z:
        members = {k: z[k] for k in z.files}
    members["l14_img"][7, 3] = np.nan
    np.savez(s.npz, **members)
    with pytest.raises(KLFilterError, match="row 7 has NaN"):
        pool.read_embeddings(s, ("l14_img",), 50)
    with pytest.raises(KLFilterError, match="row 7 has NaN"):  # a failed check is never remembered
        pool.read_embeddings(s, ("l14_img",), 50)
    members["l14_img"][7] = unit(np.random.default_rng(1), 1, 768)[0]
    np.savez(s.npz, **members)
    pool.read_embeddings(s, ("l14_img",), 50)
    assert len(counted) == 6


def test_checked_members_stay_in_their_process(tmp_path, counted):
    """A worker gets the pool without the driver's checked set (it would grow with the shards, in every task)."""
    make_minipool(tmp_path / "pool", shards=1, n=20)
    pool = Pool(str(tmp_path / "pool"))
    pool.read_embeddings(pool.shards[0], ("b32_img",), 20)
    copy = pickle.loads(pickle.dumps(pool))
    assert pool._checked and not copy._checked
    copy.read_embeddings(copy.shards[0], ("b32_img",), 20)
    assert len(counted) == 2 and copy.fingerprint == pool.fingerprint


@pytest.mark.parametrize("rows", [1, 700, 5000])
def test_members_larger_and_smaller_than_a_read_chunk_read_exactly(tmp_path, rows, monkeypatch):
    """Member data is copied in chunks (1 MiB; 64 KiB here so that a 5,000-row member takes many): every byte
    lands where np.load puts it."""
    from kl_filter.core import npyfile

    monkeypatch.setattr(npyfile, "_CHUNK", 1 << 16)
    make_minipool(tmp_path / "pool", shards=1, n=rows)
    pool = Pool(str(tmp_path / "pool"))
    got = pool.read_embeddings(pool.shards[0], ("l14_img", "b32_txt"), rows)
    with np.load(pool.shards[0].npz) as z:
        assert all(np.array_equal(got[k], z[k]) for k in got)
