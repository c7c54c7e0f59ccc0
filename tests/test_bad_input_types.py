"""Issue 14, classes 2, 3, 5 and 10: legal files with other column types, files that are not what they claim,
resume that trusts content (not sizes), and reshard's malformed samples. Every fault is generated here.

Everything either gives the right answer (the same UID file as the canonical pool) or stops with one line
``kl-filter: error: <file>: <problem>`` and exit status 2, without hanging.
"""

import io
import json
import os
import tarfile
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from minipool import make_minipool, unit

N = 300  # rows per shard of the mini pool (2 shards)


# ---- helpers -----------------------------------------------------------------------------------------------
def one_line_error(p, *fragments):
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1 and lines[0].startswith("kl-filter: error: "), p.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def retype(root, shard, column, fn):
    """Rewrite one column of ``shard``'s parquet as ``fn(old pyarrow column) -> new array``."""
    path = f"{root}/{shard}.parquet"
    t = pq.read_table(path)
    i = t.schema.get_field_index(column)
    new = fn(t.column(column).combine_chunks())
    t = t.set_column(i, pa.field(column, new.type), new)
    pq.write_table(t, path)


def run(root, out, name, **params):
    """In-process run (no interpreter start): the sorted UID file's bytes."""
    from kl_filter.filters import build_filter
    from kl_filter.runner import RunContext, run_filter

    run_filter(build_filter(name, params), str(root), str(out), RunContext(num_workers=1, device="cpu"))
    return open(out, "rb").read()


def uids_of(npy) -> set:
    return {f"{a:016x}{b:016x}" for a, b in np.load(npy).tolist()}


@pytest.fixture()
def pool(tmp_path):
    return make_minipool(tmp_path / "pool", shards=2, n=N)


@pytest.fixture()
def reference(tmp_path_factory):
    """The canonical mini pool's UID files, for comparison."""
    d = tmp_path_factory.mktemp("ref")
    root = make_minipool(d / "pool", shards=2, n=N)
    return {name: run(root, d / f"{name}.npy", name, **params) for name, params in
            [("no_filter", {}), ("clip_score", {"arch": "b32", "fraction": 0.3})]}


# ---- class 2: column types -------------------------------------------------------------------------------------
UID_TYPES = {
    "large_string": lambda c: c.cast(pa.large_string()),
    "string_view": lambda c: c.cast(pa.string_view()),
    "binary": lambda c: c.cast(pa.binary()),
    "large_binary": lambda c: c.cast(pa.large_binary()),
    "fixed_size_binary_32": lambda c: c.cast(pa.binary()).cast(pa.binary(32)),
    "dictionary": lambda c: c.dictionary_encode(),
    "uppercase": lambda c: pa.array([u.upper() for u in c.to_pylist()]),
    "raw_128_bits": lambda c: pa.array([bytes.fromhex(u) for u in c.to_pylist()], pa.binary(16)),
}


@pytest.mark.parametrize("kind", sorted(UID_TYPES))
def test_uid_types_give_the_canonical_subset(pool, reference, tmp_path, kind):
    retype(pool, "00000001", "uid", UID_TYPES[kind])
    assert run(pool, tmp_path / "n.npy", "no_filter") == reference["no_filter"]  # no row dropped
    assert run(pool, tmp_path / "c.npy", "clip_score", arch="b32", fraction=0.3) == reference["clip_score"]


SCORE_TYPES = {  # stored type -> the float32 values the pool holds after normalisation
    "float64": lambda c: c.cast(pa.float64()),
    "float16": lambda c: pa.array(c.to_numpy().astype(np.float16)),
    "int64_millis": lambda c: pa.array((c.to_numpy() * 1000).astype(np.int64)),
    "decimal": lambda c: c.cast(pa.float64()).cast(pa.decimal128(12, 9)),
    "dictionary": lambda c: c.dictionary_encode(),
}


@pytest.mark.parametrize("kind", sorted(SCORE_TYPES))
def test_score_types_are_compared_as_float32_pool_wide(pool, tmp_path, kind):
    """Shard 0 float32, shard 1 another type: the fraction rule over the float32 values of both (DataComp's
    rule), not a threshold from shard 0's dtype applied to mixed 32/64-bit keys."""
    col = "clip_b32_similarity_score"
    if kind == "int64_millis":  # the same scale in both shards, both integers: shard 0 too
        retype(pool, "00000000", col, SCORE_TYPES[kind])
    retype(pool, "00000001", col, SCORE_TYPES[kind])
    values = np.concatenate([pq.read_table(f"{pool}/{s}.parquet").column(col).cast(pa.float64()).to_numpy()
                             for s in ("00000000", "00000001")]).astype(np.float32)
    uid = np.concatenate([pq.read_table(f"{pool}/{s}.parquet").column("uid").to_numpy(zero_copy_only=False)
                          for s in ("00000000", "00000001")])
    thr = -np.sort(-values)[int(len(values) * 0.3)]
    run(pool, tmp_path / "c.npy", "clip_score", arch="b32", fraction=0.3)
    assert uids_of(tmp_path / "c.npy") == set(uid[values >= thr])


def test_filter_scores_of_other_float_types_are_cast_by_the_runner(pool, tmp_path):
    from kl_filter.filters.base import Filter, Top
    from kl_filter.runner import RunContext, run_filter

    class Mixed(Filter):
        name = "mixed_dtypes_test"
        columns = ("clip_l14_similarity_score",)

        def score(self, shard):
            x = shard["clip_l14_similarity_score"]
            return {"s": x.astype(np.float64) if shard.name.endswith("1") else x}

        def rules(self):
            return [Top("s", fraction=0.25)]

    run_filter(Mixed(), str(pool), str(tmp_path / "m.npy"), RunContext(num_workers=1, device="cpu"))
    from kl_filter.pool import Pool

    p = Pool(str(pool))
    v = np.concatenate([p.read(s, ["clip_l14_similarity_score"]).column("clip_l14_similarity_score") for s in p])
    u = np.concatenate([p.read(s).columns["uid"].to_numpy(zero_copy_only=False) for s in p])
    assert uids_of(tmp_path / "m.npy") == set(u[v >= -np.sort(-v)[int(len(v) * 0.25)]])


def test_size_and_caption_types_read_canonically(pool):
    from kl_filter.pool import Pool

    retype(pool, "00000000", "original_width", lambda c: c.cast(pa.int32()))
    retype(pool, "00000000", "original_height", lambda c: c.cast(pa.float64()))  # as pandas writes it
    retype(pool, "00000001", "original_width", lambda c: c.cast(pa.uint16()))
    retype(pool, "00000001", "text", lambda c: c.cast(pa.large_string()).dictionary_encode())
    p = Pool(str(pool))
    for s in p:
        d = p.read(s, ["original_width", "original_height", "text"])
        assert d["original_width"].dtype == np.int64 and d["original_height"].dtype == np.int64
        assert d["text"].type == pa.string() and d["text"].null_count == 0 and not d.counts


def test_caption_policy_nulls_and_undecodable_bytes_are_empty_and_counted(pool, caplog):
    """Null captions, invalid UTF-8 in a binary column and in a string column: read as "" and counted."""
    from kl_filter.pool import Pool

    texts = pq.read_table(f"{pool}/00000000.parquet").column("text").to_pylist()
    raw = [t.encode() for t in texts]
    raw[3], raw[7] = b"caf\xe9 au lait", None  # latin-1 bytes: not UTF-8
    retype(pool, "00000000", "text", lambda c: pa.array(raw, pa.binary()))
    bad = "a \udcff caption".encode("utf-8", "surrogateescape")  # invalid UTF-8 inside a *string* column
    data = b"".join([bad] + [t.encode() for t in texts[1:]])
    offsets = np.cumsum([0, len(bad)] + [len(t.encode()) for t in texts[1:]]).astype(np.int32)
    invalid = pa.Array.from_buffers(pa.string(), len(texts), [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data)])
    retype(pool, "00000001", "text", lambda c: invalid)
    p = Pool(str(pool))
    with caplog.at_level("WARNING"):
        d0, d1 = p.read(p.shards[0], ["text"]), p.read(p.shards[1], ["text"])
    t0, t1 = d0["text"].to_pylist(), d1["text"].to_pylist()
    assert t0[3] == "" and t0[7] == "" and t0[0] == texts[0] and len(t0) == N
    assert d0.counts == {"text": {"null": 1, "undecodable": 1}}
    assert t1[0] == "" and t1[1:] == texts[1:] and d1.counts == {"text": {"null": 0, "undecodable": 1}}
    assert sum("read as empty strings" in r.message for r in caplog.records) == 2


def test_caption_policy_end_to_end(pool, tmp_path):
    """basic_filter on null / undecodable captions keeps what it keeps with those captions empty."""
    texts = pq.read_table(f"{pool}/00000001.parquet").column("text").to_pylist()
    raw = [t.encode() for t in texts]
    for i in range(0, N, 5):
        raw[i] = None if i % 2 else b"\xff\xfe broken"
    retype(pool, "00000001", "text", lambda c: pa.array(raw, pa.binary()))
    p = run_cli("select", "--name", "basic_filter", "--metadata_dir", pool, "--save_path", tmp_path / "a.npy",
                "--no_progress", "--num_workers", "1")
    assert p.returncode == 0, p.stderr
    assert "30 null and 30 undecodable (invalid UTF-8) values of 300 read as empty strings" in p.stderr
    canon = make_minipool(tmp_path / "canon", shards=2, n=N)
    retype(canon, "00000001", "text", lambda c: pa.array([("" if r is None or r.startswith(b"\xff") else r.decode())
                                                           for r in raw]))
    run_cli("select", "--name", "basic_filter", "--metadata_dir", canon, "--save_path", tmp_path / "b.npy",
            "--no_progress", "--num_workers", "1", check=True)
    assert uids_of(tmp_path / "a.npy") == uids_of(tmp_path / "b.npy")


TYPE_FAULTS = {  # (column, new column, the message's fragment)
    "uid_int64": ("uid", lambda c: pa.array(np.arange(N, 2 * N, dtype=np.int64)), "column 'uid' has type int64"),
    "uid_nulls": ("uid", lambda c: pa.array([None] + c.to_pylist()[1:], pa.string()), "column 'uid' has 1 null"),
    "uid_not_hex": ("uid", lambda c: pa.array(["g" * 32] + c.to_pylist()[1:]), "row 0 is 'gggg"),
    "score_strings": ("clip_b32_similarity_score", lambda c: c.cast(pa.string()),
                      "column 'clip_b32_similarity_score' has type string, expected float32"),
    "score_bool": ("clip_b32_similarity_score", lambda c: pa.array(c.to_numpy() > 0.2), "has type bool"),
    "size_strings": ("original_width", lambda c: c.cast(pa.string()), "column 'original_width' has type string"),
    "size_fraction": ("original_height", lambda c: pa.array(c.to_numpy() + 0.5), "row 0 is"),
    "size_nulls": ("original_height", lambda c: pa.array([None] + c.to_pylist()[1:], pa.int64()), "1 null values"),
    "caption_ints": ("text", lambda c: pa.array(np.arange(N)), "column 'text' has type int64, expected strings"),
}


@pytest.mark.parametrize("fault", sorted(TYPE_FAULTS))
def test_column_type_faults_are_one_line(pool, tmp_path, fault):
    column, fn, msg = TYPE_FAULTS[fault]
    retype(pool, "00000001", column, fn)
    name = ["--name", "basic_filter"] if column in ("original_width", "original_height", "text") else \
        ["--name", "clip_score", "--arch", "b32", "--fraction", "0.3"]
    from kl_filter.core.errors import KLFilterError
    from kl_filter.filters import build_filter
    from kl_filter.runner import RunContext, run_filter

    params = {"arch": "b32", "fraction": 0.3} if name[1] == "clip_score" else {}
    with pytest.raises(KLFilterError) as e:
        run_filter(build_filter(name[1], params), str(pool), str(tmp_path / "o.npy"), RunContext(num_workers=1))
    assert str(e.value).startswith(f"{pool}/00000001.parquet: ") and msg in str(e.value), str(e.value)
    assert len(str(e.value).splitlines()) == 1 and not (tmp_path / "o.npy").exists()


def test_type_fault_through_the_cli(pool, tmp_path):
    retype(pool, "00000001", "uid", lambda c: c.cast(pa.large_binary()).cast(pa.large_binary()))
    retype(pool, "00000000", "uid", lambda c: pa.array(np.arange(N, dtype=np.int64)))
    p = run_cli("select", "--name", "no_filter", "--metadata_dir", pool, "--save_path", tmp_path / "o.npy",
                "--no_progress")
    one_line_error(p, "00000000.parquet", "column 'uid' has type int64")
    assert not (tmp_path / "o.npy").exists()


def test_column_present_twice(pool, tmp_path):
    path = f"{pool}/00000001.parquet"
    t = pq.read_table(path)
    pq.write_table(t.append_column("clip_b32_similarity_score", pa.array(np.zeros(N, np.float32))), path)
    p = run_cli("select", "--name", "clip_score", "--arch", "b32", "--fraction", "0.3", "--metadata_dir", pool,
                "--save_path", tmp_path / "o.npy", "--no_progress")
    one_line_error(p, "00000001.parquet", "column 'clip_b32_similarity_score' is present 2 times")


def test_score_file_columns_are_float32(tmp_path):
    from kl_filter.stages.scores import read_columns

    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"uid": ["0" * 32], "a": pa.array([0.1], pa.float64()),
                             "b": pa.array([3], pa.int16()), "c": pa.array(["x"])}), path)
    cols = read_columns(str(path), ["a", "b"])
    assert cols["a"].dtype == np.float32 and cols["b"].dtype == np.float32 and cols["a"][0] == np.float32(0.1)
    from kl_filter.core.errors import KLFilterError

    with pytest.raises(KLFilterError, match="column 'c' has type string"):
        read_columns(str(path), ["c"])


# ---- class 3: files that are not what they claim ---------------------------------------------------------------
def npy_header_only(shape, dtype="<u8,<u8") -> bytes:
    """An .npy whose header claims ``shape`` but which holds 16 bytes of data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.dtype(dtype).descr if "," in dtype else dtype,
                                               "fortran_order": False, "shape": shape})
    return buf.getvalue() + b"\0" * 16


UID_FILE_FAULTS = {
    "zero_bytes": (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    "npz_as_uid_file": (lambda p: np.savez(open(p, "wb"), a=np.zeros(3, "u8,u8")), "is an .npz (zip) archive"),
    "petabyte_header": (lambda p: p.write_bytes(npy_header_only((10**14,))), "header claims shape (100000000000000,)"),
    "object_dtype": (lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True), "Python objects"),
    "complex_dtype": (lambda p: np.save(p, np.zeros(4, np.complex128)), "dtype is complex128"),
    "other_structured": (lambda p: np.save(p, np.zeros(4, "u8,u8,u8")), "expected [('f0', '<u8'), ('f1', '<u8')]"),
    "parquet_as_uid_file": (lambda p: pq.write_table(pa.table({"a": [1]}), p), "no NumPy magic"),
    "fifo": (lambda p: os.mkfifo(p), "is a FIFO, not a regular file"),
    "dangling_symlink": (lambda p: os.symlink(str(p) + ".gone", p), "dangling symlink"),
    "directory": (lambda p: os.mkdir(p), "is a directory"),
}


@pytest.mark.parametrize("fault", sorted(UID_FILE_FAULTS))
def test_uid_file_faults(tmp_path, fault):
    make, msg = UID_FILE_FAULTS[fault]
    path = tmp_path / "subset.npy"
    make(path)
    from kl_filter.core.errors import KLFilterError
    from kl_filter.core.uids import check_uid_array, load_uids

    with pytest.raises(KLFilterError) as e:
        check_uid_array(load_uids(str(path)), str(path))
    assert msg in str(e.value) and "subset.npy" in str(e.value) and len(str(e.value).splitlines()) == 1, str(e.value)


def test_uid_file_fifo_through_the_cli_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / "subset.npy")
    p = run_cli("check-uids", tmp_path / "subset.npy")  # before: blocked forever in open()
    one_line_error(p, "subset.npy", "FIFO")


def _zip_member(path, name, header_shape, dtype="<f2", data=b"", compress=zipfile.ZIP_STORED, extra=None):
    """A hand-made npz: member ``name`` with an npy header claiming ``header_shape`` and ``data`` after it."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": header_shape})
    with zipfile.ZipFile(path, "w", compress) as z:
        for k, v in (extra or {}).items():
            b = io.BytesIO()
            np.save(b, v)
            z.writestr(k + ".npy", b.getvalue())
        z.writestr(name + ".npy", buf.getvalue() + data)


def _pool_emb(seed=1):
    rng = np.random.default_rng(seed)
    return {k: unit(rng, N, d) for k, d in [("b32_img", 512), ("b32_txt", 512), ("l14_img", 768)]}


NPZ_FAULTS = {
    "zero_bytes": (lambda p: open(p, "wb").close(), "empty file (0 bytes)"),
    "npy_not_npz": (lambda p: np.save(open(p, "wb"), np.zeros(3)), "not an .npz (zip) archive but an .npy array"),
    "petabyte_shape": (lambda p: _zip_member(p, "l14_txt", (10**12, 768), extra=_pool_emb()),
                       "key 'l14_txt' has shape (1000000000000, 768) but the parquet has 300 rows"),
    "deflate_bomb": (lambda p: _zip_member(p, "l14_txt", (N * 100, 768), data=bytes(N * 100 * 768 * 2),
                                           compress=zipfile.ZIP_DEFLATED, extra=_pool_emb()),
                     "key 'l14_txt' has shape (30000, 768) but the parquet has 300 rows"),
    "header_lies_about_size": (lambda p: _zip_member(p, "l14_txt", (N, 768), data=bytes(100), extra=_pool_emb()),
                               "header claims shape (300, 768)"),
    "complex_dtype": (lambda p: np.savez(p, **_pool_emb(), l14_txt=np.zeros((N, 768), np.complex64)),
                      "key 'l14_txt': dtype complex64 is not a plain float type"),
    "structured_dtype": (lambda p: np.savez(p, **_pool_emb(), l14_txt=np.zeros((N, 768), "f2,f2")),
                         "is not a plain float type"),
    "integer_dtype": (lambda p: np.savez(p, **_pool_emb(), l14_txt=np.zeros((N, 768), np.int16)),
                      "is not a plain float type"),
}


@pytest.mark.parametrize("fault", sorted(NPZ_FAULTS))
def test_npz_faults_are_checked_from_headers(pool, tmp_path, fault):
    import time

    from kl_filter.core.errors import KLFilterError
    from kl_filter.pool import Pool

    make, msg = NPZ_FAULTS[fault]
    make(f"{pool}/00000001.npz")
    t0 = time.perf_counter()
    with pytest.raises(KLFilterError) as e:
        p = Pool(str(pool))
        p.fingerprint  # noqa: B018 - reads every npz's zip directory
        p.read(p.shards[1], keys=["l14_txt"])
    assert time.perf_counter() - t0 < 10  # nothing inflated
    assert str(e.value).startswith(f"{pool}/00000001.npz: ") and msg in str(e.value), str(e.value)


def test_float32_embeddings_are_read_as_float16(pool):
    from kl_filter.pool import Pool

    z = dict(np.load(f"{pool}/00000001.npz"))
    np.savez(f"{pool}/00000001.npz", **{k: v.astype(np.float32) for k, v in z.items()})
    p = Pool(str(pool))
    got = p.read(p.shards[1], keys=["l14_txt"])["l14_txt"]
    assert got.dtype == np.float16 and (got == z["l14_txt"]).all()


POOL_ENTRY_FAULTS = {  # (entry, how to make it, message)
    "dangling_npz_symlink": ("00000001.npz", lambda p: (os.remove(p), os.symlink(p + ".moved", p)), "dangling symlink"),
    "dangling_parquet_symlink": ("00000002.parquet", lambda p: os.symlink("/nonexistent/x.parquet", p),
                                 "dangling symlink"),
    "fifo_parquet": ("00000002.parquet", os.mkfifo, "is a FIFO, not a regular file"),
    "fifo_npz": ("00000001.npz", lambda p: (os.remove(p), os.mkfifo(p)), "is a FIFO, not a regular file"),
    "directory_parquet": ("00000002.parquet", os.mkdir, "is a directory, not a regular file"),
    "zero_byte_npz": ("00000001.npz", lambda p: open(p, "wb").close(), "empty file (0 bytes)"),
    "zero_byte_parquet": ("00000001.parquet", lambda p: open(p, "wb").close(), "unreadable parquet"),
}


@pytest.mark.parametrize("fault", sorted(POOL_ENTRY_FAULTS))
def test_pool_entries_that_are_not_files_stop_without_hanging(pool, tmp_path, fault):
    """Even clip_score, which never reads the npz, stops: the pool is not what it claims."""
    entry, make, msg = POOL_ENTRY_FAULTS[fault]
    make(f"{pool}/{entry}")
    from kl_filter.core.errors import KLFilterError
    from kl_filter.filters import build_filter
    from kl_filter.runner import RunContext, run_filter

    with pytest.raises(KLFilterError) as e:
        run_filter(build_filter("clip_score", {"arch": "b32", "fraction": 0.3}), str(pool), str(tmp_path / "o.npy"),
                   RunContext(num_workers=1))
    assert str(e.value).startswith(f"{pool}/{entry}: ") and msg in str(e.value), str(e.value)
    assert not (tmp_path / "o.npy").exists()


def test_fifo_in_the_pool_through_the_cli_does_not_hang(pool, tmp_path):
    os.mkfifo(f"{pool}/00000002.parquet")
    p = run_cli("select", "--name", "no_filter", "--metadata_dir", pool, "--save_path", tmp_path / "o.npy", "--no_progress")
    one_line_error(p, "00000002.parquet", "FIFO")


def test_fifo_in_the_scores_directory_is_one_line(pool, tmp_path):
    from kl_filter.core.errors import KLFilterError
    from kl_filter.filters import build_filter
    from kl_filter.runner import RunContext, run_filter

    flt = build_filter("kl", {"mode": "kl", "arch": "b32", "target": "txt", "fraction": 0.25, "num_samples": 40})
    ctx = RunContext(num_workers=1, device="cpu", scores_dir=str(tmp_path / "scores"))
    run_filter(flt, str(pool), str(tmp_path / "o.npy"), ctx)
    os.remove(tmp_path / "scores" / "00000000.parquet")
    os.mkfifo(tmp_path / "scores" / "00000000.parquet")  # where the resume reads a score file: never opened
    with pytest.raises(KLFilterError, match="00000000.parquet: is a FIFO, not a regular file"):
        run_filter(flt, str(pool), str(tmp_path / "o.npy"), ctx)


def test_unlistable_metadata_directory(pool, tmp_path, monkeypatch):
    from fsspec.implementations.local import LocalFileSystem

    from kl_filter.core.errors import KLFilterError
    from kl_filter.pool import Pool

    def denied(self, path, detail=False, **kw):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(LocalFileSystem, "ls", denied)
    with pytest.raises(KLFilterError, match="cannot list the metadata directory \\(Permission denied\\)"):
        Pool(str(pool))
    monkeypatch.undo()
    os.chmod(pool, 0o100)  # searchable, not readable: a real one, where the user is not root
    try:
        if os.access(pool, os.R_OK):
            return  # root reads anything: the monkeypatched listing above stands for it
        p = run_cli("select", "--name", "no_filter", "--metadata_dir", pool, "--save_path", tmp_path / "o.npy", "--no_progress")
        one_line_error(p, "cannot list the metadata directory")
    finally:
        os.chmod(pool, 0o700)


def _stats(pool, out):
    run_cli("stats", "--metadata_dir", pool, "--out", out, "--arch", "b32", "--num_samples", "20", "--no_moments",
            "--no_progress", "--num_workers", "1", check=True)


STATS_FAULTS = {
    "zero_bytes": (lambda p: open(p, "wb").close(), "empty file (0 bytes)"),
    "npy_not_npz": (lambda p: np.save(open(p, "wb"), np.zeros(3)), "not an .npz (zip) archive but an .npy array"),
    "petabyte_sample": (lambda p: _zip_member(p, "b32_img_sample", (10**12, 512),
                                              extra={"pool_fingerprint": np.array("x"), "pool_rows": np.int64(600)}),
                        "member 'b32_img_sample' has 1000000000000 rows, the pool 600"),
    "object_member": (lambda p: _zip_member(p, "seed", (1,), dtype="|O", data=b"\x80\x04N."), "Python objects"),
    "fifo": (os.mkfifo, "is a FIFO"),
}


@pytest.mark.parametrize("fault", sorted(STATS_FAULTS))
def test_statistics_file_faults(pool, tmp_path, fault):
    make, msg = STATS_FAULTS[fault]
    path = str(tmp_path / "stats.npz")
    make(path)
    from kl_filter.core.errors import KLFilterError
    from kl_filter.pool import Pool
    from kl_filter.stats.statsfile import load_stats

    with pytest.raises(KLFilterError) as e:
        load_stats(path, Pool(str(pool)), archs=["b32"])
    assert str(e.value).startswith(f"{path}: ") and msg in str(e.value), str(e.value)


def test_statistics_file_fault_through_the_cli(pool, tmp_path):
    open(tmp_path / "stats.npz", "wb").close()
    p = run_cli("select", "--name", "kl", "--arch", "b32", "--fraction", "0.25", "--stats", tmp_path / "stats.npz",
                "--metadata_dir", pool, "--save_path", tmp_path / "o.npy", "--no_progress")
    one_line_error(p, "stats.npz", "empty file (0 bytes)")


def test_broken_statistics_partials_are_recomputed_with_a_log_line(pool, tmp_path, caplog):
    """A resume partial that is zero bytes, a bomb, an npy, a FIFO: recomputed (logged), the same statistics."""
    from kl_filter.pool import Pool
    from kl_filter.stats.reference import compute_stats

    p = Pool(str(pool))
    ref = compute_stats(p, archs=["b32"], num_samples=20, moments=False, parts_dir=str(tmp_path / "ref.parts"))
    parts = tmp_path / "s.parts"
    compute_stats(p, archs=["b32"], num_samples=20, moments=False, parts_dir=str(parts))
    good = (parts / "00000000.npz").read_bytes()
    open(parts / "00000000.npz", "wb").close()
    with caplog.at_level("WARNING"):
        again = compute_stats(p, archs=["b32"], num_samples=20, moments=False, parts_dir=str(parts))
    assert (parts / "00000000.npz").read_bytes() == good
    os.remove(parts / "00000001.npz")
    os.mkfifo(parts / "00000001.npz")
    members = {k: v for k, v in np.load(parts / "00000000.npz").items() if k != "b32_img.emb"}
    _zip_member(parts / "00000000.npz", "b32_img.emb", (10**12, 512), extra=members)  # a member claiming a petabyte
    with caplog.at_level("WARNING"):
        third = compute_stats(p, archs=["b32"], num_samples=20, moments=False, parts_dir=str(parts))
    logged = [r.message for r in caplog.records if "statistics partial unusable" in r.message]
    assert len(logged) == 3 and "empty file" in logged[0] and "FIFO" in " ".join(logged), logged
    for s in (again, third):
        for k in ("b32_img_sample", "b32_txt_sample", "b32_img_sample_uids"):
            assert (s[k] == ref[k]).all()


# ---- class 5: resume trusts content, not sizes ------------------------------------------------------------------
def test_fingerprint_sees_content_not_sizes(pool):
    from kl_filter.pool import Pool

    before = Pool(str(pool)).fingerprint
    assert Pool(str(pool)).fingerprint == before  # a pure function of the bytes
    size = os.path.getsize(f"{pool}/00000001.npz")
    z = dict(np.load(f"{pool}/00000001.npz"))
    z["l14_img"] = z["l14_img"][::-1].copy()  # the same values in another row order: the same size
    np.savez(f"{pool}/00000001.npz", **z)
    assert os.path.getsize(f"{pool}/00000001.npz") == size
    after_npz = Pool(str(pool)).fingerprint
    assert after_npz != before
    size = os.path.getsize(f"{pool}/00000000.parquet")
    t = pq.read_table(f"{pool}/00000000.parquet")
    scores = t.column("clip_l14_similarity_score").to_numpy().copy()
    scores[10] = np.float32(0.49999)  # one value changed in place: the same size
    t = t.set_column(t.schema.get_field_index("clip_l14_similarity_score"), "clip_l14_similarity_score",
                     pa.array(scores))
    pq.write_table(t, f"{pool}/00000000.parquet")
    assert os.path.getsize(f"{pool}/00000000.parquet") == size
    assert Pool(str(pool)).fingerprint not in (before, after_npz)


def test_rewritten_embeddings_of_the_same_size_never_reuse_stale_scores(pool, tmp_path):
    """The issue's case: a KL run with a scores directory, the embeddings rewritten (same size), the same run
    again: it must not reuse the stale statistics and scores. It stops (statistics of another pool, one line) and
    with overwrite gives exactly a fresh run's subset."""
    from kl_filter.core.errors import KLFilterError
    from kl_filter.filters import build_filter
    from kl_filter.runner import RunContext, run_filter

    def kl(scores, out, overwrite=False):
        flt = build_filter("kl", {"mode": "kl", "arch": "b32", "target": "txt", "fraction": 0.25, "num_samples": 40})
        run_filter(flt, str(pool), str(tmp_path / out),
                   RunContext(num_workers=1, device="cpu", scores_dir=str(tmp_path / scores), overwrite=overwrite))
        return (tmp_path / out).read_bytes()

    old = kl("scores", "old.npy")
    size = os.path.getsize(f"{pool}/00000001.npz")
    z = dict(np.load(f"{pool}/00000001.npz"))
    z["b32_txt"] = unit(np.random.default_rng(99), N, 512)
    np.savez(f"{pool}/00000001.npz", **z)
    assert os.path.getsize(f"{pool}/00000001.npz") == size
    fresh = kl("fresh", "fresh.npy")
    assert fresh != old
    try:
        assert kl("scores", "again.npy") == fresh
    except KLFilterError as e:
        assert "computed on another pool" in str(e) and len(str(e).splitlines()) == 1
    assert kl("scores", "again.npy", overwrite=True) == fresh


# ---- class 10: reshard -----------------------------------------------------------------------------------------
def _tar(path, samples):
    with tarfile.open(path, "w") as tf:
        for key, body in samples:
            for ext, data in body.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))


def _sample(n, json_bytes=None):
    body = {"jpg": b"\xff\xd8jpeg" + bytes([n % 256]), "txt": f"caption {n}".encode()}
    if json_bytes is not False:
        body["json"] = json_bytes if json_bytes is not None else json.dumps({"uid": f"{n:032x}"}).encode()
    return f"{n:09d}", body


def test_reshard_skips_and_counts_malformed_samples_and_keeps_the_rest(tmp_path):
    from kl_filter.core.uids import hex_to_u8u8, sort_uids

    (tmp_path / "in").mkdir()
    bad = [_sample(100, False), _sample(101, b"{not json"), _sample(102, json.dumps({"uid": "z" * 32}).encode()),
           _sample(103, json.dumps({"uid": 5}).encode()), _sample(104, b"[1, 2]"), _sample(105, b"\xff\xfe")]
    _tar(tmp_path / "in" / "00000000.tar", [_sample(0), *bad[:3], _sample(1), *bad[3:], _sample(2)])
    _tar(tmp_path / "in" / "00000001.tar", [_sample(3), _sample(4)])
    np.save(tmp_path / "s.npy", sort_uids(hex_to_u8u8([f"{n:032x}" for n in (0, 1, 2, 4)])))
    p = run_cli("reshard", "--shards_dir", tmp_path / "in", "--uids", tmp_path / "s.npy", "--out", tmp_path / "out",
                "--no_progress", "--num_workers", "2")
    assert p.returncode == 0, p.stderr
    assert "00000000.tar: 6 malformed samples skipped (1 bad_json" not in p.stderr  # counted per reason:
    assert "00000000.tar: 6 malformed samples skipped (3 bad_json, 2 bad_uid, 1 missing_json)" in p.stderr
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["output_count"] == 4 and meta["subset_not_found"] == 0 and meta["failed_shards"] == {}
    assert meta["skipped_samples"] == {"missing_json": 1, "bad_json": 3, "bad_uid": 2, "total": 6}
    assert meta["skipped_by_shard"] == {"00000000.tar": {"bad_json": 3, "bad_uid": 2, "missing_json": 1}}
    assert meta["processed_count"] == 11


def test_reshard_refuses_an_earlier_output_unless_overwrite_then_cleans_it(tmp_path):
    from kl_filter.core.uids import hex_to_u8u8, sort_uids

    (tmp_path / "in").mkdir()
    _tar(tmp_path / "in" / "00000000.tar", [_sample(n) for n in range(6)])
    np.save(tmp_path / "all.npy", sort_uids(hex_to_u8u8([f"{n:032x}" for n in range(6)])))
    np.save(tmp_path / "two.npy", sort_uids(hex_to_u8u8([f"{n:032x}" for n in (1, 4)])))
    base = ["reshard", "--shards_dir", tmp_path / "in", "--out", tmp_path / "out", "--shard_size", "2", "--no_progress"]
    run_cli(*base, "--uids", tmp_path / "all.npy", check=True)
    before = sorted(os.listdir(tmp_path / "out"))
    assert "00000002.tar" in before
    (tmp_path / "out" / "notes.txt").write_text("mine")  # not the resharder's: never touched
    p = run_cli(*base, "--uids", tmp_path / "two.npy")
    one_line_error(p, "out", "earlier reshard (3 shards, meta.json)", "--overwrite")
    assert sorted(os.listdir(tmp_path / "out")) == sorted(before + ["notes.txt"])  # nothing touched
    p = run_cli(*base, "--uids", tmp_path / "two.npy", "--overwrite")
    if p.returncode == 2 and "notes.txt" in p.stderr:  # the output check refuses foreign files: fine, remove it
        os.remove(tmp_path / "out" / "notes.txt")
        p = run_cli(*base, "--uids", tmp_path / "two.npy", "--overwrite")
    assert p.returncode == 0, p.stderr
    tars = sorted(f for f in os.listdir(tmp_path / "out") if f.endswith(".tar"))
    assert tars == ["00000000.tar"] and not (tmp_path / "out" / "00000002_stats.json").exists()
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["output_count"] == 2 and meta["output_shard_count"] == 1
    assert (tmp_path / "out" / "sample_ids.npy").read_bytes() == (tmp_path / "two.npy").read_bytes()


def test_reshard_fifo_input_shard_is_reported_not_blocking(tmp_path):
    from kl_filter.core.uids import hex_to_u8u8, sort_uids

    (tmp_path / "in").mkdir()
    _tar(tmp_path / "in" / "00000000.tar", [_sample(n) for n in range(3)])
    os.mkfifo(tmp_path / "in" / "00000001.tar")
    np.save(tmp_path / "s.npy", sort_uids(hex_to_u8u8([f"{n:032x}" for n in range(3)])))
    p = run_cli("reshard", "--shards_dir", tmp_path / "in", "--uids", tmp_path / "s.npy", "--out", tmp_path / "o",
                "--no_progress")
    assert p.returncode == 0, p.stderr
    meta = json.loads((tmp_path / "o" / "meta.json").read_text())
    assert meta["output_count"] == 3 and "FIFO" in meta["failed_shards"]["00000001.tar"]
