"""Nothing lost, round 3 (issue 26): every file the tool takes besides the pool is read by one layer
(:mod:`kl_filter.core.inputs`) with the pool's guarantees, and the shared work under a scores directory is locked.

Each case gives the correct result, or one line naming the file with exit status 2: no traceback, no hang,
nothing written. Library calls are used where the command line adds nothing (fast); a few cases go through
``kl_filter.apps.cli.main`` in-process or a real subprocess (hangs, locks, the exit status end to end).
"""

import builtins
import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc

import numpy as np
import pytest

from conftest import REPO, DiskFull
from kl_filter.core import inputs
from kl_filter.core.errors import KLFilterError
from minipool import make_minipool


# ---- helpers ---------------------------------------------------------------------------------------------------------
def refused(fn, *words):
    """``fn()`` raises one :class:`KLFilterError` line holding every one of ``words``; returns the message."""
    with pytest.raises(KLFilterError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    return msg


def no_hang(fn, fifos=(), timeout=20):
    """Run ``fn`` in a thread; a call still blocked after ``timeout`` s fails the test (its FIFOs are then opened
    for writing, which releases the blocked reader)."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        for f in fifos:
            os.close(os.open(f, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"blocked for {timeout} s (opened a FIFO?)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def cli(*args, capsys):
    """``kl-filter ARGS`` in this process: (status, stdout, stderr)."""
    from kl_filter.apps.cli import main

    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_exit_2(code, err, *words):
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith(("INFO", "WARNING"))]
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("kl-filter: error: "), err
    for w in words:
        assert w in lines[0], f"{w!r} not in {lines[0]!r}"
    return lines[0]


def subprocess_cli(*args, timeout=120):
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "kl_filter", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def tree(root) -> dict:
    """Every file under ``root`` with its bytes (what a refused command must leave unchanged)."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = open(p, "rb").read() if os.path.isfile(p) else None
    return out


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return make_minipool(tmp_path_factory.mktemp("files") / "pool")


# ---- what a path is: the reading layer opens regular files only ------------------------------------------------------
def _not_a_file(tmp_path, kind):
    p = str(tmp_path / "input")
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "dev_zero":
        os.symlink("/dev/zero", p)
    elif kind == "directory":
        os.mkdir(p)
    elif kind == "dangling_symlink":
        os.symlink(str(tmp_path / "gone"), p)
    return p


NOT_A_FILE = {"fifo": "is a FIFO", "dev_zero": "is a character device", "directory": "is a directory",
              "dangling_symlink": "dangling symlink", "missing": "not found"}
READERS = {
    "json": lambda p: inputs.load_json(p, "manifest", 1 << 20),
    "yaml": lambda p: inputs.load_yaml(p, "recipe", 1 << 20),
    "npy": lambda p: inputs.load_npy(p, "prompt embedding", [(None, 768)]),
}


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("kind", sorted(NOT_A_FILE))
def test_only_regular_files_are_opened(tmp_path, kind, reader):
    p = _not_a_file(tmp_path, kind)
    msg = no_hang(lambda: refused(lambda: READERS[reader](p), NOT_A_FILE[kind]), [p] if kind == "fifo" else [])
    assert msg.startswith(p + ": ")


def test_double_colon_in_a_local_name_is_part_of_the_name(tmp_path):
    p = tmp_path / "run::a.json"
    p.write_text('{"a": 1}')
    assert inputs.load_json(str(p), "manifest", 100) == {"a": 1}
    np.save(tmp_path / "p::x.npy", np.eye(2, 768, dtype=np.float32))
    np.testing.assert_array_equal(inputs.load_npy(str(tmp_path / "p::x.npy"), "x", [(None, 768)]),
                                  np.eye(2, 768, dtype=np.float32))
    assert not (tmp_path / "run").exists()


# ---- text: size, encoding, nesting -----------------------------------------------------------------------------------
def test_size_cap_is_checked_before_reading(tmp_path):
    p = tmp_path / "m.json"
    p.write_bytes(b"[" + b"0," * 600 + b"0]")
    refused(lambda: inputs.load_json(str(p), "manifest", 1000), "manifest of 1,203 bytes (at most 1,000)")
    assert inputs.load_json(str(p), "manifest", 1203) == [0] * 601


@pytest.mark.parametrize("data, words", [
    (b"\xef\xbb\xbf" + b'{"a": 1}', None),                             # a UTF-8 byte-order mark: accepted
    ('{"a": "caf\u00e9"}'.encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset 10)"),
    ('{"a": 1}'.encode("utf-16"), "UTF-16 text; save it as UTF-8"),
    (b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)), "not UTF-8 text"),  # a binary (kl-filter run /bin/ls)
    (b'{"a": 1}\x00', "NUL bytes"),
    (b"", "not valid JSON"),
    (b'{"a": ', "not valid JSON"),
], ids=["bom", "latin1", "utf16", "binary", "nul", "empty", "truncated"])
def test_text_is_utf8_json(tmp_path, data, words):
    p = tmp_path / "m.json"
    p.write_bytes(data)
    if words is None:
        assert inputs.load_json(str(p), "manifest", 1 << 20) == {"a": 1}
    else:
        refused(lambda: inputs.load_json(str(p), "manifest", 1 << 20), str(p), words)


def test_deep_json_is_refused_before_the_parser_recurses(tmp_path):
    p = tmp_path / "m.json"
    p.write_text("[" * 100_000 + "]" * 100_000)  # 200 KB: under the 1 MiB cap, a RecursionError before
    t = time.perf_counter()
    refused(lambda: inputs.load_json(str(p), "manifest", 1 << 20, max_depth=8),
            "nested 100,000 levels deep (at most 8)")
    assert time.perf_counter() - t < 2
    # brackets inside strings are text, not nesting; exactly the limit is accepted
    assert inputs.json_depth('{"a": "[[[[{{{{\\"[[[", "b": [[1]]}') == 3
    p.write_text("[" * 8 + "]" * 8)
    assert inputs.load_json(str(p), "manifest", 100, max_depth=8) == [[[[[[[[]]]]]]]]


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("text, words", [
    (BOMB, "expands to more than 100,000 nodes"),                    # billion laughs: 9^9 nodes
    ("a: &a [1, *a]\n", "alias *a (line 1) is inside the node it names (a cycle)"),
    ("a: &a {b: &b [*a]}\n", "alias *a (line 1) is inside the node it names (a cycle)"),
    ("[" * 10_000 + "]" * 10_000, "nested more than 64 levels deep"),
    ("a:\n" + "".join("  " * i + "- \n" for i in range(1, 100)), "nested more than 64 levels deep"),
    ("a: *nowhere\n", "alias *nowhere (line 1) names no anchor"),
    ("a: [1,\n", "not valid YAML (line 2, column 1"),
    ("a: 1\n---\nb: 2\n", "not valid YAML"),
], ids=["billion-laughs", "self-alias", "mutual-alias", "deep-flow", "deep-block", "undefined-alias", "invalid",
        "two-documents"])
def test_yaml_shape_is_bounded_before_loading(tmp_path, text, words):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    refused(lambda: inputs.load_yaml(str(p), "recipe", 1 << 20), str(p), words)


def test_yaml_aliases_within_bounds_load(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("base: &b {fraction: 0.3, arch: l14}\none: *b\ntwo: {<<: *b, arch: b32}\n")
    assert inputs.load_yaml(str(p), "recipe", 1 << 20) == {
        "base": {"fraction": 0.3, "arch": "l14"}, "one": {"fraction": 0.3, "arch": "l14"},
        "two": {"fraction": 0.3, "arch": "b32"}}
    # an alias's depth counts where it is used: 40 levels under an alias at depth 40 is too deep
    deep = "[" * 40 + "1" + "]" * 40
    p.write_text(f"a: &a {deep}\nb: " + "[" * 30 + "*a" + "]" * 30 + "\n")
    refused(lambda: inputs.load_yaml(str(p), "recipe", 1 << 20), "nested more than 64 levels deep")


# ---- .npy: the header before any allocation --------------------------------------------------------------------------
def _npy_header(shape, descr="<f4") -> bytes:
    """The magic and header of an .npy file (no data)."""
    import io

    import numpy.lib.format as fmt

    buf = io.BytesIO()
    fmt.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _npy(tmp_path, kind):
    p = str(tmp_path / "e.npy")
    good = np.eye(3, 768, dtype=np.float32)
    if kind == "huge_header":  # 200 bytes claiming 10^12 x 768 (2.7 PiB of float32)
        data = _npy_header((10**12, 768))
        open(p, "wb").write(data + b"\0" * (200 - len(data)))
    elif kind == "truncated":
        np.save(p, good)
        data = open(p, "rb").read()
        open(p, "wb").write(data[: len(data) - 100])
    elif kind == "object":
        np.save(p, np.array([{"x": 1}, None], dtype=object), allow_pickle=True)
    elif kind in ("complex", "string", "structured", "int"):
        arr = {"complex": good.astype(np.complex64), "string": np.array(["a" * 768] * 3),
               "structured": np.zeros((3, 768), "f4,f4"), "int": good.astype(np.int64)}[kind]
        np.save(p, arr)
    elif kind in ("nan", "inf"):
        bad = good.copy()
        bad[2, 5] = np.nan if kind == "nan" else np.inf
        np.save(p, bad)
    elif kind == "empty":
        open(p, "wb").close()
    elif kind == "npz":
        np.savez(p + ".npz", a=good)
        os.replace(p + ".npz", p)
    elif kind == "width":
        np.save(p, np.eye(3, 700, dtype=np.float32))
    elif kind == "no_rows":
        np.save(p, np.zeros((0, 768), np.float32))
    elif kind == "three_d":
        np.save(p, good.reshape(3, 1, 768))
    return p


NPY_FAULTS = {
    "huge_header": "header claims shape (1000000000000, 768) of float32 (3,072,000,000,000,000 bytes), more than",
    "truncated": "header claims shape (3, 768)",
    "object": "holds Python objects (pickle), refused",
    "complex": "dtype complex64 is not a plain float type",
    "string": "is not a plain float type",
    "structured": "is not a plain float type",
    "int": "dtype int64 is not a plain float type",
    "nan": "row 2 has NaN or inf values",
    "inf": "row 2 has NaN or inf values",
    "empty": "empty file (0 bytes)",
    "npz": "is an .npz (zip) archive, not an .npy array",
    "width": "has shape (3, 700), expected (768,) or (n, 768)",
    "no_rows": "has shape (0, 768): no rows",
    "three_d": "has shape (3, 1, 768), expected",
}


@pytest.mark.parametrize("kind", sorted(NPY_FAULTS))
def test_npy_faults_are_found_from_the_header(tmp_path, kind):
    p = _npy(tmp_path, kind)
    tracemalloc.start()
    try:
        refused(lambda: inputs.load_npy(p, "prompt embedding", [(768,), (None, 768)], max_bytes=1 << 30), p,
                NPY_FAULTS[kind])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20  # never the header's claim, at most the file


def test_npy_that_is_what_it_claims_loads_exactly(tmp_path):
    a = np.random.default_rng(0).standard_normal((5, 768)).astype(np.float32)
    np.save(tmp_path / "a.npy", np.asfortranarray(a))
    got = inputs.load_npy(str(tmp_path / "a.npy"), "x", [(None, 768)])
    assert got.dtype == np.float32 and got.shape == (5, 768)
    np.testing.assert_array_equal(got, a)
    # a header claiming more than the file holds is refused even without a cap
    data = open(tmp_path / "a.npy", "rb").read()
    open(tmp_path / "b.npy", "wb").write(data.replace(b"(5, 768)", b"(9, 768)"))
    refused(lambda: inputs.load_npy(str(tmp_path / "b.npy"), "x", [(None, 768)]),
            "header claims shape (9, 768) of float32 (27,648 bytes) but the file holds 15,360 bytes")


# ---- the pool's embeddings.json --------------------------------------------------------------------------------------
def _manifest_pool(tmp_path, content: str):
    root = make_minipool(tmp_path / "pool", shards=1, n=20)
    (tmp_path / "pool" / "embeddings.json").write_text(content)
    return root


@pytest.mark.parametrize("content, words", [
    ('{"families": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested 100,001 levels deep (at most 8)"),
    ('{"families": {"l14": {"logit_scale": 1e-300}}}', "logit_scale 1e-300 is outside [1, 1000]"),
    ('{"families": {"l14": {"logit_scale": 1e4}}}', "logit_scale 10000 is outside [1, 1000]"),
    ('{"families": {"l14": {"logit_scale": 0.5}}}', "pass --logit_scale"),
    ('{"families": {"l14": {"logit_scale": 1e400}}}', "must be a positive number, got inf"),
    ('{"families": {"l14": {"logit_scale": 14.3, "model": ["x"]}}}', "family 'l14': model must be a name"),
    ('{"format": true, "families": {}}', "embeddings manifest format True"),
], ids=["nested-200KB", "scale-1e-300", "scale-1e4", "scale-0.5", "scale-overflow", "model-not-a-name",
        "format-bool"])
def test_embeddings_manifest_faults(tmp_path, content, words):
    from kl_filter.pool import Pool

    root = _manifest_pool(tmp_path, content)
    refused(lambda: Pool(root).temperatures, "embeddings.json", words)


def test_logit_scales_at_the_ends_of_the_range_are_used(tmp_path):
    from kl_filter.pool import Pool
    from kl_filter.pool.temperature import family_temperature

    root = _manifest_pool(tmp_path, '{"families": {"l14": {"logit_scale": 1}, "b32": {"logit_scale": 1000}}}')
    pool = Pool(root)
    assert family_temperature(pool, "l14").logit_scale == 1.0
    assert family_temperature(pool, "b32").logit_scale == 1000.0


def test_a_degenerate_logit_scale_flag_is_used_with_one_warning(tmp_path, caplog):
    from kl_filter.pool import Pool
    from kl_filter.pool.temperature import resolve

    pool = Pool(make_minipool(tmp_path / "pool", shards=1, n=20))
    with caplog.at_level("WARNING"):
        for _ in range(3):  # one scorer bound per family and per worker: said once
            assert resolve(pool, "l14", 1e-300).logit_scale == 1e-300
    said = [r.getMessage() for r in caplog.records if "--logit_scale" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("--logit_scale 1e-300 is below 1, the least scale"), said


def test_nested_manifest_through_the_command_line_writes_nothing(tmp_path, capsys):
    root = _manifest_pool(tmp_path, '{"families": ' + "[" * 100_000 + "]" * 100_000 + "}")
    before = tree(tmp_path)
    code, _, err = cli("select", "--name", "kl", "--arch", "l14", "--fraction", "0.25", "--num_samples", "5",
                       "--metadata_dir", root, "--save_path", tmp_path / "o.npy", "--no_progress",
                       "--num_workers", "1", capsys=capsys)
    one_line_exit_2(code, err, "embeddings.json", "nested 100,001 levels deep")
    assert tree(tmp_path) == before


# ---- a UID file's sidecar --------------------------------------------------------------------------------------------
@pytest.fixture
def pair(tmp_path):
    from kl_filter.core.uids import save_uids_with_sidecar

    path = str(tmp_path / "s.npy")
    uids = np.array([(1, 2), (3, 4)], dtype="u8,u8")
    save_uids_with_sidecar(path, uids, {"name": "t"})
    return path


def _sidecar_fault(path, kind):
    side = path + ".json"
    good = json.load(open(side))
    os.remove(side)
    if kind in ("fifo", "dev_zero", "directory", "dangling_symlink"):
        {"fifo": lambda: os.mkfifo(side), "dev_zero": lambda: os.symlink("/dev/zero", side),
         "directory": lambda: os.mkdir(side), "dangling_symlink": lambda: os.symlink(side + ".gone", side)}[kind]()
        return side
    doc = {"uids_file_str": {**good, "uids_file": "x"}, "list": [good], "string": "x",
           "sha_not_hex": {**good, "uids_file": {**good["uids_file"], "sha256": "z" * 64}},
           "rows_bool": {**good, "uids_file": {**good["uids_file"], "rows": True}},
           "uids_file_list": {**good, "uids_file": [1, 2]}}.get(kind)
    data = {"deep": ("[" * 100_000 + "]" * 100_000).encode(), "latin1": '{"name": "caf\u00e9"}'.encode("latin-1"),
            "bom": b"\xef\xbb\xbf" + json.dumps(good).encode(),
            "other_content": json.dumps({**good, "uids_file": {**good["uids_file"], "sha256": "0" * 64}}).encode()
            }.get(kind, json.dumps(doc).encode())
    open(side, "wb").write(data)
    return side


SIDECAR_FAULTS = {
    "fifo": "sidecar is a FIFO", "dev_zero": "sidecar is a character device", "directory": "sidecar is a directory",
    "dangling_symlink": "sidecar: dangling symlink", "uids_file_str": "'uids_file' must be an object",
    "uids_file_list": "'uids_file' must be an object", "list": "a JSON list, not an object",
    "string": "a JSON str, not an object", "sha_not_hex": "no sha256 of 64 hex digits",
    "rows_bool": "'rows' must be a count, got True", "deep": "nested 100,000 levels deep",
    "latin1": "not UTF-8 text", "other_content": "does not belong to this UID file",
}


@pytest.mark.parametrize("kind", sorted(SIDECAR_FAULTS))
def test_sidecar_faults(pair, kind):
    from kl_filter.core.uids import check_sidecar

    side = _sidecar_fault(pair, kind)
    msg = no_hang(lambda: refused(lambda: check_sidecar(pair), SIDECAR_FAULTS[kind]),
                  [side] if kind == "fifo" else [])
    assert msg.startswith(side + ": ")


def test_sidecar_with_a_byte_order_mark_verifies(pair):
    from kl_filter.core.uids import check_sidecar

    _sidecar_fault(pair, "bom")
    doc, verified = check_sidecar(pair)
    assert verified and doc["uids_file"]["rows"] == 2 and doc["name"] == "t"


def test_check_uids_with_a_fifo_sidecar_does_not_hang(pair):
    side = _sidecar_fault(pair, "fifo")
    p = subprocess_cli("check-uids", pair, timeout=60)  # before: blocked forever in open()
    one_line_exit_2(p.returncode, p.stderr, side, "is a FIFO")


# ---- outputs: a trailing slash names a directory ---------------------------------------------------------------------
@pytest.mark.parametrize("save", ["newdir/", "newdir/.", "newdir/..", "./", "newdir//"])
def test_a_file_output_that_names_a_directory_is_refused(tmp_path, save):
    from kl_filter.core.outputs import In, Out, check

    os.chdir(tmp_path)
    refused(lambda: check([Out(save, "--save_path"), Out(save + ".json", "--save_path's sidecar")],
                          [In(str(tmp_path / "pool"), "--metadata_dir")]), "--save_path ends with", "names a directory")
    assert os.listdir(tmp_path) == []


def test_an_output_inside_an_output_file_is_refused(tmp_path):
    from kl_filter.core.outputs import Out, check

    refused(lambda: check([Out(str(tmp_path / "a"), "--save_path"), Out(str(tmp_path / "a" / "x.json"), "--stats")],
                          []), "--stats", "would be inside --save_path, which is a file")


def test_trailing_slash_save_path_through_the_command_line(tmp_path, pool, capsys):
    os.chdir(tmp_path)  # before: exit 0, the UID file hidden as newdir/.newdir.<pid>.tmp, the sidecar newdir/.json
    code, _, err = cli("select", "--name", "clip_score", "--arch", "l14", "--fraction", "0.3", "--metadata_dir", pool,
                       "--save_path", "newdir/", "--no_progress", capsys=capsys)
    one_line_exit_2(code, err, "newdir/: --save_path ends with '/': it names a directory, not a file")
    assert os.listdir(tmp_path) == []


def test_an_atomic_write_never_lands_inside_a_directory_that_appeared(tmp_path):
    from kl_filter.core import atomic

    target = tmp_path / "out.npy"
    with pytest.raises(KLFilterError) as e:
        with atomic.atomic_open(str(target)) as f:
            f.write(b"data")
            target.mkdir()  # another process made a directory there meanwhile
    assert "write failed (Is a directory); nothing was written" in str(e.value)
    assert os.listdir(target) == [] and sorted(os.listdir(tmp_path)) == ["out.npy"]


# ---- inspect on a full disk ------------------------------------------------------------------------------------------
def _full_disk_open(suffix, real=builtins.open):
    def fake(path, mode="r", *a, **k):
        f = real(path, mode, *a, **k)
        return DiskFull(f) if "w" in mode and str(path).endswith(suffix) else f
    return fake


def _fail_parquet(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["index.html", "sample.parquet", "marker"])
def test_inspect_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, pool, capsys, monkeypatch, where):
    from kl_filter.apps.report import build

    monkeypatch.setattr(build, "all_plots", lambda *a, **k: {})  # the figures' pictures are not what fails here
    if where in ("index.html", "marker"):
        monkeypatch.setattr(build, "open", _full_disk_open(".html" if where == "index.html" else ".kl-filter"),
                            raising=False)
    else:
        monkeypatch.setattr(build.pq, "write_table", _fail_parquet)
    out = tmp_path / "reports" / "rep"
    code, _, err = cli("inspect", "--metadata_dir", pool, "--out", out, "--filters", "clip_score_l14_30",
                       "--sample_size", "200", "--examples", "2", "--bins", "5", "--dedup_pairs", "0",
                       "--num_workers", "1", "--no_progress", capsys=capsys)
    one_line_exit_2(code, err, f"{out}: write failed (No space left on device); nothing was written")
    assert os.listdir(tmp_path / "reports") == []  # no report, no temp directory


# ---- statistics: a zero-byte partial, another pool's file ------------------------------------------------------------
STATS = ("--arch", "b32", "--num_samples", "20", "--no_moments", "--no_progress", "--num_workers", "1")


def test_a_zero_byte_statistics_partial_is_recomputed(tmp_path, pool, capsys):
    from kl_filter.stats.statsfile import load_stats

    out = tmp_path / "S.npz"
    assert cli("stats", "--metadata_dir", pool, "--out", out, *STATS, capsys=capsys)[0] == 0
    first = load_stats(str(out)).arrays
    os.remove(out)
    (tmp_path / "S.npz.parts").mkdir()
    (tmp_path / "S.npz.parts" / "00000000.npz").write_bytes(b"")  # before: "not made by kl-filter", no resume
    code, _, err = cli("stats", "--metadata_dir", pool, "--out", out, *STATS, capsys=capsys)
    assert code == 0 and "Traceback" not in err, err
    again = load_stats(str(out)).arrays
    for k in ("b32_img_sample", "b32_txt_sample", "b32_img_sample_uids"):
        np.testing.assert_array_equal(again[k], first[k])
    assert not (tmp_path / "S.npz.parts").exists()
    # one class further: a FIFO among the partials is not kl-filter's: refused, never opened
    (tmp_path / "S.npz.parts").mkdir()
    os.mkfifo(tmp_path / "S.npz.parts" / "00000001.npz")
    code, _, err = no_hang(lambda: cli("stats", "--metadata_dir", pool, "--out", tmp_path / "T.npz", *STATS,
                                       capsys=capsys), [tmp_path / "S.npz.parts" / "00000001.npz"])
    assert code == 0  # another output: the FIFO's directory is not T's
    code, _, err = no_hang(lambda: cli("stats", "--metadata_dir", pool, "--out", out, "--overwrite", *STATS,
                                       capsys=capsys), [tmp_path / "S.npz.parts" / "00000001.npz"])
    one_line_exit_2(code, err, "S.npz.parts", "not made by kl-filter", "00000001.npz")


def test_statistics_of_a_changed_pool_name_the_remedy(tmp_path, capsys):
    from minipool import write_shard

    root = make_minipool(tmp_path / "pool", shards=2, n=60)
    args = ("select", "--name", "kl", "--arch", "b32", "--fraction", "0.25", "--num_samples", "20",
            "--metadata_dir", root, "--save_path", tmp_path / "o.npy", "--no_progress", "--num_workers", "1")
    assert cli(*args, "--scores_dir", tmp_path / "sc", capsys=capsys)[0] == 0
    assert cli(*args, "--stats", tmp_path / "S.npz", capsys=capsys)[0] == 0
    write_shard(root, "00000001", 60, seed=9, uid_start=60)  # the pool changes
    code, _, err = cli(*args, "--scores_dir", tmp_path / "sc", capsys=capsys)
    one_line_exit_2(code, err, "sc/stats.npz: statistics were computed on another pool",
                    "pass --overwrite to recompute them, or use a new --scores_dir")
    code, _, err = cli(*args, "--stats", tmp_path / "S.npz", capsys=capsys)
    one_line_exit_2(code, err, "S.npz: statistics were computed on another pool",
                    "pass --overwrite to recompute them into this --stats file, or name another")
    assert cli(*args, "--scores_dir", tmp_path / "sc", "--overwrite", capsys=capsys)[0] == 0  # the remedy works


# ---- concurrent runs on one scores directory -------------------------------------------------------------------------
def test_exclusive_lets_one_holder_in_at_a_time(tmp_path, caplog):
    from kl_filter.core.atomic import exclusive

    lock, inside, overlaps = str(tmp_path / "w.lock"), [], []

    def hold(i):
        with exclusive(lock, "the work"):
            inside.append(i)
            if len(inside) > 1:
                overlaps.append(list(inside))
            time.sleep(0.05)
            inside.remove(i)

    with caplog.at_level("WARNING"):
        threads = [threading.Thread(target=hold, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert overlaps == [] and not os.path.exists(lock)
    assert any("another run holds the work; waiting for it to finish" in r.getMessage() for r in caplog.records)


def _holds_lock(path) -> bool:
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _run_while_another_holds_the_work(tmp_path, pool, args, capsys, caplog):
    """Run A (a process) until it holds its bucket lock, freeze it (SIGSTOP), run B (here, in a thread), let A go:
    B must wait for A, not fail, and both must give the same subset."""
    import glob

    base = ["select", *args, "--metadata_dir", pool, "--scores_dir", tmp_path / "sc", "--no_progress",
            "--num_workers", "1"]
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(tmp_path / "a.err", "w") as err:
        a = subprocess.Popen([sys.executable, "-m", "kl_filter", *map(str, base), "--save_path", tmp_path / "a.npy"],
                             stdout=subprocess.DEVNULL, stderr=err, env=env)
    deadline = time.time() + 120
    while not any(_holds_lock(p) for p in glob.glob(str(tmp_path / "sc" / ".buckets" / "*.lock"))):
        assert a.poll() is None and time.time() < deadline, "A finished before its bucket stage could be caught"
        time.sleep(0.01)
    a.send_signal(signal.SIGSTOP)
    try:
        with caplog.at_level("WARNING"):
            b = threading.Thread(target=lambda: box.append(cli(*base, "--save_path", tmp_path / "b.npy",
                                                               capsys=capsys)), daemon=True)
            box: list = []
            b.start()
            while not any("waiting for it to finish" in r.getMessage() for r in caplog.records):
                assert b.is_alive() and time.time() < deadline, box
                time.sleep(0.05)
    finally:
        a.send_signal(signal.SIGCONT)
    b.join(120)
    assert a.wait(120) == 0, open(tmp_path / "a.err").read()
    assert "Traceback" not in open(tmp_path / "a.err").read()
    (code, _, err), = box
    assert code == 0 and "Traceback" not in err, err
    assert open(tmp_path / "a.npy", "rb").read() == open(tmp_path / "b.npy", "rb").read()
    assert not (tmp_path / "sc" / ".buckets").exists()


def test_two_negcliploss_runs_on_one_scores_dir(tmp_path, pool, capsys, caplog):
    # before: the second run deleted the first's bucket files (FileNotFoundError in .buckets/<name>_<digest>/)
    _run_while_another_holds_the_work(tmp_path, pool, ["--name", "negcliploss", "--arch", "l14", "--fraction",
                                                       "0.3", "--batch_size", "50", "--num_batches", "4"],
                                      capsys, caplog)


@pytest.mark.slow
def test_two_semdedup_runs_on_one_scores_dir(tmp_path, pool, capsys, caplog):
    _run_while_another_holds_the_work(tmp_path, pool, ["--name", "semdedup", "--arch", "l14", "--eps", "0.1",
                                                       "--num_clusters", "5"], capsys, caplog)


# ---- phase 2: IWL's prompt embedding, target embeddings, SemDeDup's saved centroids ----------------------------------
PROMPT_FAULTS = {
    "huge_header": "more than the 268,435,456 bytes allowed",   # before: _ArrayMemoryError (2.7 PiB)
    "truncated": "header claims shape (3, 768)",
    "object": "holds Python objects (pickle), refused",
    "complex": "dtype complex64 is not a plain",
    "string": "is not a plain",
    "empty": "empty file (0 bytes)",
    "npz": "is an .npz (zip) archive",
    "three_d": "has shape (3, 1, 768), expected",
    "nan": "prompt embedding is not finite",
    "width": "prompt embedding has dimension 700, but l14_img is 768-d",
}


@pytest.mark.parametrize("kind", sorted(PROMPT_FAULTS))
def test_prompt_embedding_faults(tmp_path, kind):
    from kl_filter.scorers.iwl import load_prompt_embedding

    p = _npy(tmp_path, kind)
    refused(lambda: load_prompt_embedding(p, "l14"), p, PROMPT_FAULTS[kind])


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "directory"])
def test_prompt_and_target_files_that_are_not_files(tmp_path, kind):
    from kl_filter.scorers.iwl import load_prompt_embedding
    from kl_filter.scorers.targets import load_targets

    p = _not_a_file(tmp_path, kind)
    fifos = [p] if kind == "fifo" else []
    no_hang(lambda: refused(lambda: load_prompt_embedding(p, "l14"), p, NOT_A_FILE[kind]), fifos)
    os.rename(p, p + ".npy")
    no_hang(lambda: refused(lambda: load_targets([p + ".npy"], "l14"), p + ".npy"), [p + ".npy"] if fifos else [])


def test_prompt_embedding_of_a_vector_reads_as_one_unit_row(tmp_path):
    from kl_filter.scorers.iwl import load_prompt_embedding

    v = np.arange(1, 769, dtype=np.float64)
    np.save(tmp_path / "p.npy", v)
    got = load_prompt_embedding(str(tmp_path / "p.npy"), "l14")
    np.testing.assert_allclose(got, (v / np.linalg.norm(v))[None].astype(np.float32), rtol=1e-7)


@pytest.mark.parametrize("kind", ["huge_header", "truncated", "object", "string", "empty", "npz", "no_rows"])
def test_target_embedding_faults(tmp_path, kind):
    from kl_filter.scorers.targets import load_targets

    p = _npy(tmp_path, kind)
    refused(lambda: load_targets([p], "l14"), p, NPY_FAULTS[kind].split(" (")[0] if kind != "huge_header" else
            "bytes allowed")


def _centroid_file(tmp_path, prov, centroids, raw=None):
    import io

    p = tmp_path / "sc" / "semdedup_centroids" / "l14_k5_x.npz"
    p.parent.mkdir(parents=True, exist_ok=True)
    if raw is not None:
        p.write_bytes(raw)
    else:
        buf = io.BytesIO()
        np.savez(buf, centroids=centroids, provenance=np.array(json.dumps(prov, sort_keys=True)))
        p.write_bytes(buf.getvalue())
    return str(p)


PROV = {"key": "l14_img", "num_clusters": 5, "seed": 0}
GOOD = (np.eye(5, 768) + 0.01).astype(np.float32)


@pytest.mark.parametrize("kind, words", [
    ("width_700", "member 'centroids': has shape (5, 700), expected (5, 768)"),  # before: a matmul traceback
    ("k_6", "has shape (6, 768), expected (5, 768)"),
    ("float64", None), ("nan", "NaN or inf values"), ("truncated", "saved centroids unusable"),
    ("not_npz", "not an .npz (zip) archive"), ("object", "holds Python objects"),
], ids=lambda x: x if isinstance(x, str) and " " not in x else "")
def test_saved_centroids_are_checked_before_use(tmp_path, caplog, kind, words):
    from kl_filter.scorers.semdedup import load_centroids

    c = {"width_700": np.ones((5, 700), np.float32), "k_6": np.ones((6, 768), np.float32),
         "float64": GOOD.astype(np.float64), "nan": np.where(np.eye(5, 768) > 0, np.nan, 0).astype(np.float32),
         "object": np.array([None] * 5, dtype=object)}.get(kind, GOOD)
    raw = None
    if kind == "truncated":
        full = open(_centroid_file(tmp_path, PROV, GOOD), "rb").read()
        raw = full[: len(full) // 2]
    elif kind == "not_npz":
        raw = b"\x93NUMPY" + b"\0" * 100
    if kind == "object":
        import io

        buf = io.BytesIO()
        np.savez(buf, centroids=c, provenance=np.array(json.dumps(PROV, sort_keys=True)), allow_pickle=True)
        raw = buf.getvalue()
    path = _centroid_file(tmp_path, PROV, c, raw)
    with caplog.at_level("WARNING"):
        got = load_centroids(path, PROV)
    assert got is None  # retrained by the scorer; the report says it has no centroids for its pairs
    said = [r.getMessage() for r in caplog.records if "saved centroids unusable" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(path) and (words is None or words in said[0]), said


def test_saved_centroids_that_fit_load_and_a_fifo_is_never_opened(tmp_path):
    from kl_filter.scorers.semdedup import load_centroids

    path = _centroid_file(tmp_path, PROV, GOOD)
    np.testing.assert_array_equal(load_centroids(path, PROV), GOOD)
    assert load_centroids(path, {**PROV, "seed": 1}) is None  # another provenance: retrained, silently
    os.remove(path)
    assert load_centroids(path, PROV) is None
    os.mkfifo(path)  # before: select and inspect blocked forever
    no_hang(lambda: refused(lambda: load_centroids(path, PROV), path, "saved centroids file is a FIFO"), [path])


def test_inspect_bins_are_bounded_by_what_they_allocate(tmp_path, pool, capsys):
    code, _, err = cli("inspect", "--metadata_dir", pool, "--out", tmp_path / "rep", "--bins", 10**12,
                       "--no_progress", capsys=capsys)  # before: _ArrayMemoryError (7.28 TiB)
    one_line_exit_2(code, err, "--bins must be at most 10,000", "got 1,000,000,000,000")
    assert os.listdir(tmp_path) == []


# ---- every input of every member of a combined recipe is checked against the outputs ---------------------------------
def test_an_output_never_replaces_a_members_input_file(tmp_path, pool, capsys):
    from types import SimpleNamespace

    from kl_filter.core.outputs import check_run

    t = tmp_path / "T.npy"
    x = np.random.default_rng(0).standard_normal((20, 768)).astype(np.float32)
    np.save(t, x / np.linalg.norm(x, axis=1, keepdims=True))
    before = t.read_bytes()
    member = {"score": {"name": "normsim", "params": {"arch": "l14", "target_embeddings": [str(t)]}}, "fraction": 0.3}
    cuts = [{"column": "clip_l14_similarity_score", "fraction": 0.5}, member, member]  # a repeated (aliased) member
    flt = SimpleNamespace(params=lambda: {"cuts": cuts})
    ctx = SimpleNamespace(scores_dir=None, stats=None, overwrite=False)
    refused(lambda: check_run(flt, pool, str(t), ctx), "--save_path is --target_embeddings")
    loop: list = []
    loop.append({"cuts": loop})  # a cycle, as a YAML self-alias builds: walked once, no endless loop
    check_run(SimpleNamespace(params=lambda: {"cuts": loop}), pool, str(tmp_path / "ok.npy"), ctx)
    # end to end: before, exit 0 and the user's target file overwritten (the same filter alone was refused)
    (tmp_path / "m.yaml").write_text("cuts:\n  - {column: clip_l14_similarity_score, fraction: 0.5}\n"
                                     "  - {score: {name: normsim, params: {arch: l14, "
                                     f"target_embeddings: [{t}]}}}}, fraction: 0.3}}\n")
    code, _, err = cli("run", tmp_path / "m.yaml", "--metadata_dir", pool, "--save_path", t, "--no_progress",
                       capsys=capsys)
    one_line_exit_2(code, err, f"{t}: --save_path is --target_embeddings ({t}): an output never replaces an input")
    assert t.read_bytes() == before


# ---- plugins: outputs validated at the boundary, a name clash disables only that plugin ------------------------------
BAD_PLUGINS = '''
import numpy as np
from kl_filter import Filter, Top


class _Base(Filter):
    columns = ("clip_l14_similarity_score",)

    def rules(self):
        return [Top("s", fraction=0.5)]


def _n(shard):
    return shard.num_rows


class Strings(_Base):
    name = "p_strings"
    def score(self, shard):
        return {"s": np.array(["a"] * _n(shard))}


class Objects(_Base):
    name = "p_objects"
    def score(self, shard):
        return {"s": np.array([{"a": 1}] * _n(shard), dtype=object)}


class Complex(_Base):
    name = "p_complex"
    def score(self, shard):
        return {"s": np.ones(_n(shard), np.complex64)}


class TwoD(_Base):
    name = "p_2d"
    def score(self, shard):
        return {"s": np.ones((_n(shard), 2), np.float32)}


class NotADict(_Base):
    name = "p_list"
    def score(self, shard):
        return [np.ones(_n(shard))]


class Missing(_Base):
    name = "p_missing"
    def score(self, shard):
        return {"other": np.ones(_n(shard), np.float32)}


class Short(_Base):
    name = "p_short"
    def score(self, shard):
        return {"s": np.ones(_n(shard) - 1, np.float32)}


class Fine(_Base):
    name = "p_fine"
    def score(self, shard):
        return {"s": np.asarray(shard["clip_l14_similarity_score"], np.float64)}


def a_function():
    return None
'''
PLUGIN_ENTRIES = {"p_strings": "Strings", "p_objects": "Objects", "p_complex": "Complex", "p_2d": "TwoD",
                  "p_list": "NotADict", "p_missing": "Missing", "p_short": "Short", "p_fine": "Fine",
                  "p_function": "a_function", "clip_score": "Fine"}


@pytest.fixture
def bad_plugins(tmp_path, monkeypatch):
    """A distribution ``kl-bad-plugins`` declaring the plugins above (one reusing the built-in name clip_score),
    installed as pip would (module + dist-info), seen by a fresh filter registry."""
    import importlib

    from kl_filter.filters import registry as freg
    from kl_filter.core.registry import Registry

    site = tmp_path / "site"
    (site / "kl_bad_plugins-0.1.dist-info").mkdir(parents=True)
    (site / "kl_bad_plugins.py").write_text(BAD_PLUGINS)
    (site / "kl_bad_plugins-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: kl-bad-plugins\nVersion: 0.1\n")
    (site / "kl_bad_plugins-0.1.dist-info" / "entry_points.txt").write_text(
        "[kl_filter.filters]\n" + "".join(f"{k} = kl_bad_plugins:{v}\n" for k, v in PLUGIN_ENTRIES.items()))
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    spec = {k: v if isinstance(v, str) else f"{v.__module__}:{v.__qualname__}"  # loaded ones are classes by now
            for k, v in freg.FILTERS._targets.items()}
    builtins = {k: v for k, v in spec.items() if v.startswith("kl_filter.")}
    fresh = Registry(freg.FILTERS.kind, freg.FILTERS.group, builtins)
    monkeypatch.setattr(freg, "FILTERS", fresh)
    return fresh


def test_a_plugin_reusing_a_built_in_name_disables_only_itself(bad_plugins, caplog, pool, tmp_path, capsys):
    from kl_filter.filters.registry import build_filter, list_filters

    with caplog.at_level("WARNING"):
        names = list_filters()  # before: every command failed, list-filters included
    assert "p_fine" in names and "clip_score" in names
    said = [r.getMessage() for r in caplog.records if "reuses the filter name 'clip_score'" in r.getMessage()]
    assert len(said) == 1 and "distribution kl-bad-plugins" in said[0] and "kl-filter's own" in said[0], said
    assert type(build_filter("clip_score", {"arch": "l14", "fraction": 0.3})).__module__ == "kl_filter.filters.datacomp"
    code, _, err = cli("select", "--name", "p_fine", "--metadata_dir", pool, "--save_path", tmp_path / "f.npy",
                       "--no_progress", capsys=capsys)
    assert code == 0, err
    code, _, err = cli("select", "--name", "clip_score", "--arch", "l14", "--fraction", "0.5", "--metadata_dir", pool,
                       "--save_path", tmp_path / "c.npy", "--no_progress", capsys=capsys)  # the built-in, intact
    assert code == 0, err
    assert open(tmp_path / "f.npy", "rb").read() == open(tmp_path / "c.npy", "rb").read()


@pytest.mark.parametrize("name, words", [
    ("p_strings", "column 's' has dtype <U1, not numbers or booleans"),
    ("p_objects", "column 's' has dtype object, not numbers or booleans"),
    ("p_complex", "column 's' has dtype complex64, not numbers or booleans"),
    ("p_2d", "column 's' has shape (300, 2), expected (300,)"),
    ("p_list", "score() returned a list, not a dict of columns"),
    ("p_missing", "score() has no column 's', which its rules read (it returned ['other'])"),
    ("p_short", "returned 299 values for column 's', expected 300"),
    ("p_function", "entry point 'kl_bad_plugins:a_function' names a function, not a class"),
])
def test_a_plugins_bad_output_is_one_line_naming_it(bad_plugins, pool, tmp_path, capsys, name, words):
    code, _, err = cli("select", "--name", name, "--metadata_dir", pool, "--save_path", tmp_path / "x.npy",
                       "--no_progress", "--num_workers", "1", capsys=capsys)
    one_line_exit_2(code, err, f"filter {name!r} (distribution kl-bad-plugins)", words)
    assert os.listdir(tmp_path) == ["site"]


# ---- recipe files ----------------------------------------------------------------------------------------------------
RECIPE_FAULTS = {
    "binary": (open(sys.executable, "rb").read(4096), "recipe is not UTF-8 text"),  # kl-filter run /bin/ls
    "name_list": (b"name: [clip_score]\n", "'name' must be a filter name (a string), got ['clip_score']"),
    "name_number": (b"name: 3\n", "'name' must be a filter name (a string), got 3"),
    "params_key": (b"name: clip_score\nparams: {[1]: 2}\n", "not valid YAML"),
    "params_int_key": (b"name: clip_score\nparams: {1: 2}\n", "'params' keys must be parameter names, got 1"),
    "all_of_cycle": (b"name: all_of\nparams:\n  filters: &a\n    - {name: all_of, params: {filters: *a}}\n",
                     "alias *a (line 4) is inside the node it names (a cycle)"),
    "cuts_cycle": (b"cuts: &c\n  - {filter: {name: cuts, params: {cuts: *c}}}\n", "alias *c (line 2)"),
    "deep": (b"cuts: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested more than 64 levels deep"),
    "laughs": (BOMB.encode(), "expands to more than 100,000 nodes"),
    "utf16": ("name: clip_score\n".encode("utf-16"), "UTF-16 text"),
    "empty": (b"", "a recipe is a mapping"),
    "huge": (b"# " + b"x" * (1 << 20) + b"\nname: clip_score\n", "recipe of 1,048,596 bytes (at most 1,048,576)"),
}


@pytest.mark.parametrize("kind", sorted(RECIPE_FAULTS))
def test_recipe_file_faults(tmp_path, pool, capsys, kind):
    data, words = RECIPE_FAULTS[kind]
    r = tmp_path / "r.yaml"
    r.write_bytes(data)
    code, _, err = cli("run", r, "--metadata_dir", pool, "--save_path", tmp_path / "o.npy", capsys=capsys)
    one_line_exit_2(code, err, str(r), words)
    assert sorted(os.listdir(tmp_path)) == ["r.yaml"]


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "directory", "dangling_symlink"])
def test_recipe_that_is_not_a_file(tmp_path, pool, capsys, kind):
    r = _not_a_file(tmp_path, kind)
    code, _, err = no_hang(lambda: cli("run", r, "--metadata_dir", pool, "--save_path", tmp_path / "o.npy",
                                       capsys=capsys), [r] if kind == "fifo" else [])
    one_line_exit_2(code, err, r, NOT_A_FILE[kind])  # a dangling link said "no such recipe" (not what it is)


def test_recipe_with_a_byte_order_mark_and_aliases_runs(tmp_path, pool, capsys):
    r = tmp_path / "r.yaml"
    r.write_bytes(b"\xef\xbb\xbf# CLIP score top half\nname: clip_score\nparams: &p {arch: l14, fraction: 0.5}\n")
    code, _, err = cli("run", r, "--metadata_dir", pool, "--save_path", tmp_path / "a.npy", "--no_progress",
                       capsys=capsys)
    assert code == 0, err
    code, _, err = cli("select", "--name", "clip_score", "--arch", "l14", "--fraction", "0.5", "--metadata_dir", pool,
                       "--save_path", tmp_path / "b.npy", "--no_progress", capsys=capsys)
    assert code == 0, err
    assert open(tmp_path / "a.npy", "rb").read() == open(tmp_path / "b.npy", "rb").read()


# ---- sizes a user asks for are bounded by what they allocate ---------------------------------------------------------
def test_resample_is_bounded_by_the_memory_its_uid_file_needs(tmp_path, pool, capsys, monkeypatch):
    v = np.random.default_rng(1).standard_normal(768)
    np.save(tmp_path / "P.npy", v / np.linalg.norm(v))
    args = ("select", "--name", "iwl", "--prompt_embedding", tmp_path / "P.npy", "--arch", "l14",
            "--metadata_dir", pool, "--save_path", tmp_path / "r.npy", "--no_progress")
    code, _, err = cli(*args, "--resample", 10**12, capsys=capsys)  # before: _ArrayMemoryError (14.6 TiB)
    one_line_exit_2(code, err, "--resample 1,000,000,000,000 draws make a UID file of 14.6 TiB (16 bytes a draw)",
                    "draw at most")
    real = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda k: 1024 if k == "SC_PHYS_PAGES" else real(k))  # 1,024 pages here
    most = 1024 * os.sysconf("SC_PAGE_SIZE") // 32
    code, _, err = cli(*args, "--resample", most + 1, capsys=capsys)
    one_line_exit_2(code, err, f"draw at most {most:,}")
    code, _, err = cli(*args, "--resample", most, capsys=capsys)
    assert code == 0, err
    assert len(np.load(tmp_path / "r.npy")) == most


@pytest.mark.parametrize("kind", ["huge_header", "object", "truncated"])
def test_image_based_centroid_npy_is_read_from_its_header(tmp_path, kind):
    from kl_filter.core.inputs import load_array

    p = _npy(tmp_path, kind)  # one class further: DataComp's --centroids given as .npy (a MemoryError traceback)
    refused(lambda: load_array(p, "image_features"), p, "not a plain .npy array", NPY_FAULTS[kind].split(" (")[0]
            if kind != "huge_header" else "header claims shape (1000000000000, 768)")
