"""The canonical types of a pool's columns, and the one place every column read is brought to them.

A DataComp parquet (docs/formats.md#the-pool) is legal with other Arrow types than the canonical ones (a
writer's choice of
``large_string``, ``string_view``, dictionary encoding, float16 or float64, ...). Every reader of pool parquet and
score files goes through :func:`normalise`, so a filter sees one type per column whatever the writer chose, and
scores are compared in one dtype over the whole pool (the radix k-th search and the thresholds take the dtype
of the first shard: float32 everywhere makes that sound). What cannot be brought to the canonical type without
guessing stops the run with one line naming the file, the column and its type.

==========================  ========================  =============================================================
column                      canonical type            accepted and how (anything else: one line, exit status 2)
==========================  ========================  =============================================================
``uid``                     32 lowercase hex digits   string, large_string, string_view, binary, large_binary,
                            (pa.string; and the       binary_view, fixed_size_binary(32), any of these dictionary-
                            ``u8,u8`` array)          encoded: each value must be 32 hex digits (either case; kept
                                                      lowercase). fixed_size_binary(16): the 128 bits, big-endian.
                                                      Refused: integers (a 64-bit integer cannot hold a 128-bit
                                                      uid), nulls, any other length or character.
``clip_*_similarity_score`` float32 (NumPy)           float16/32/64, (u)int8..64 and decimal: cast to float32
and every score-file column                           (rounded to nearest); null → NaN (never kept, counted by the
                                                      runner); an all-null column → NaN. Refused: strings, bool,
                                                      binary, nested types.
``original_width``,         int64 (NumPy)             any integer type (uint64 above 2⁶³ refused); floats whose
``original_height``                                   values are all finite integers (as pandas writes them).
                                                      Refused: nulls, NaN, fractions, strings.
``text`` (caption),         str (pa.string, no        string, large_string, string_view, dictionary-encoded:
``url``, ``sha256``         nulls)                    as is; binary/large_binary/binary_view: decoded as UTF-8.
                                                      Policy: a null or an undecodable value (invalid UTF-8, in a
                                                      binary or a string column) is read as the empty string
                                                      ``""`` (which no caption rule keeps) and counted; the counts
                                                      are logged once per shard and returned with the shard.
                                                      Refused: numbers, bool, nested types.
other columns               as stored                 read for plugins that ask for them: numbers as NumPy,
                                                      anything else as a pyarrow array.
==========================  ========================  =============================================================

A column present twice in one file (two fields of the same name) is refused: which one a reader would take is
up to the reader.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa

from kl_filter.core.errors import KLFilterError

UID, SCORE, SIZE, TEXT = "uid", "score", "size", "text"

#: column -> kind; the kinds' policies are the table above.
SCHEMA = {
    "uid": UID,
    "text": TEXT,
    "url": TEXT,
    "sha256": TEXT,
    "original_width": SIZE,
    "original_height": SIZE,
    "clip_b32_similarity_score": SCORE,
    "clip_l14_similarity_score": SCORE,
}
SCORE_COLUMN_RE = re.compile(r"^clip_[a-z0-9]+_similarity_score$")


def column_kind(name: str) -> str | None:
    """The kind of a pool column (None: not in the canonical schema, read as stored)."""
    if name in SCHEMA:
        return SCHEMA[name]
    return SCORE if SCORE_COLUMN_RE.match(name) else None


def check_columns(schema: pa.Schema, names, path: str) -> None:
    """Refuse a requested column that is absent or present more than once in ``schema``."""
    all_names = schema.names
    twice = [c for c in dict.fromkeys(names) if all_names.count(c) > 1]
    if twice:
        raise KLFilterError(f"column {twice[0]!r} is present {all_names.count(twice[0])} times", path)
    missing = [c for c in dict.fromkeys(names) if c not in all_names]
    if missing:
        raise KLFilterError(f"missing column(s) {missing}", path)


def _refuse(path: str, name: str, col, expected: str):
    return KLFilterError(f"column {name!r} has type {col.type}, expected {expected}", path)


def _one_array(col) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    return col


def _is_stringish(t) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_binaryish(t) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)


# ---- uid ---------------------------------------------------------------------------------------------------
def read_uids(col, path: str, name: str = "uid") -> tuple[np.ndarray, pa.Array]:
    """``(u8,u8 array, pa.string array of 32 lowercase hex digits)`` of a uid column, or one line."""
    from kl_filter.core.uids import hex_to_u8u8, u8u8_to_hex

    arr = _one_array(col)
    t = arr.type
    if pa.types.is_null(t):  # no values at all: an empty shard written from empty lists, or all null
        if len(arr):
            raise KLFilterError(f"column {name!r} has {len(arr)} null values", path)
        arr = pa.array([], pa.string())
        t = arr.type
    if pa.types.is_fixed_size_binary(t) and t.byte_width == 16:
        if arr.null_count:
            raise KLFilterError(f"column {name!r} has {arr.null_count} null values", path)
        raw = np.frombuffer(arr.buffers()[1], np.uint8, count=16 * len(arr), offset=16 * arr.offset).reshape(-1, 16)
        u = np.empty(len(arr), dtype=np.dtype("u8,u8"))
        u["f0"] = raw[:, :8].copy().view(">u8").reshape(-1)
        u["f1"] = raw[:, 8:].copy().view(">u8").reshape(-1)
    else:
        if pa.types.is_fixed_size_binary(t) and t.byte_width == 32 or _is_binaryish(t) or _is_stringish(t):
            if not pa.types.is_string(t):
                try:
                    arr = arr.cast(pa.binary()).cast(pa.string())
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                    raise KLFilterError(f"column {name!r} ({t}) holds values that are not 32 hex digits", path) from e
        else:
            raise _refuse(path, name, arr, "32-hex-digit strings (a 128-bit uid)")
        if arr.null_count:
            raise KLFilterError(f"column {name!r} has {arr.null_count} null values", path)
        try:
            u = hex_to_u8u8(arr)
        except ValueError as e:
            raise KLFilterError(str(e), path) from e
    hexes = u8u8_to_hex(u)
    canon = pa.Array.from_buffers(pa.string(), len(u),
                                  [None, pa.py_buffer(np.arange(0, 32 * (len(u) + 1), 32, dtype=np.int32)),
                                   pa.py_buffer(np.ascontiguousarray(hexes).view(np.uint8))])
    return u, canon


# ---- scores ------------------------------------------------------------------------------------------------
def read_score(col, path: str, name: str) -> np.ndarray:
    """A score column as float32 (nulls: NaN), or one line."""
    arr = _one_array(col)
    t = arr.type
    if pa.types.is_null(t):
        return np.full(len(arr), np.nan, np.float32)
    if not (pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_decimal(t)):
        raise _refuse(path, name, arr, "float32 scores")
    if pa.types.is_decimal(t):
        arr = arr.cast(pa.float64())
    out = arr.to_numpy(zero_copy_only=False)  # nulls: NaN (integers with nulls come back as float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(out, dtype=np.float32)


# ---- sizes -------------------------------------------------------------------------------------------------
def read_size(col, path: str, name: str) -> np.ndarray:
    """An image size column as int64, or one line."""
    arr = _one_array(col)
    t = arr.type
    if pa.types.is_null(t) and not len(arr):
        return np.zeros(0, np.int64)
    if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        raise _refuse(path, name, arr, "int64 pixel sizes")
    if arr.null_count:
        raise KLFilterError(f"column {name!r} has {arr.null_count} null values (a size must be a number)", path)
    x = arr.to_numpy(zero_copy_only=False)
    if x.dtype.kind == "u" and x.size and x.max() > np.iinfo(np.int64).max:
        raise KLFilterError(f"column {name!r} has values above int64", path)
    if x.dtype.kind == "f":
        bad = ~np.isfinite(x) | (x != np.round(x)) | (np.abs(x) > 2.0**62)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise KLFilterError(f"column {name!r} ({t}) row {i} is {x[i]!r}, not a whole number of pixels", path)
    return x.astype(np.int64, copy=False)


# ---- captions and other strings ------------------------------------------------------------------------------
def read_text(col, path: str, name: str) -> tuple[pa.Array, dict]:
    """A string column as a pa.string array without nulls, and ``{"null": n, "undecodable": m}`` (values read
    as ``""``; see the policy in the module docstring), or one line."""
    arr = _one_array(col)
    t = arr.type
    undecodable = 0
    if _is_stringish(t):
        if not pa.types.is_string(t):
            arr = arr.cast(pa.string())
        try:
            arr.validate(full=True)  # parquet readers do not check UTF-8
        except pa.ArrowInvalid:
            arr, undecodable = _decode(arr.cast(pa.binary()))
    elif _is_binaryish(t) or pa.types.is_fixed_size_binary(t):
        try:
            arr = arr.cast(pa.binary()).cast(pa.string())
        except pa.ArrowInvalid:
            arr, undecodable = _decode(arr.cast(pa.binary()))
    elif pa.types.is_null(t):
        arr = pa.nulls(len(arr), pa.string())
    else:
        raise _refuse(path, name, arr, "strings")
    nulls = arr.null_count
    if nulls:
        import pyarrow.compute as pc  # here only: importing it costs every command 60-80 ms of start-up

        arr = pc.fill_null(arr, "")
    return arr, {"null": int(nulls), "undecodable": int(undecodable)}


def _decode(binary: pa.Array) -> tuple[pa.Array, int]:
    """UTF-8 decoding value by value (only for columns that hold invalid UTF-8): invalid values become ``""``."""
    out, bad = [], 0
    for v in binary.to_pylist():
        if v is None:
            out.append(None)
            continue
        try:
            out.append(v.decode("utf-8"))
        except UnicodeDecodeError:
            out.append("")
            bad += 1
    return pa.array(out, pa.string()), bad


# ---- dispatch ----------------------------------------------------------------------------------------------
def normalise(name: str, col, path: str, kind: str | None = None):
    """``(value, counts)`` of one column in its canonical type (``kind`` overrides the schema's, e.g. SCORE for
    every column of a score file). ``counts`` is ``{}`` unless values were read under a policy (captions)."""
    kind = kind or column_kind(name)
    if kind == SCORE:
        return read_score(col, path, name), {}
    if kind == SIZE:
        return read_size(col, path, name), {}
    if kind == TEXT:
        return read_text(col, path, name)
    if kind == UID:
        return read_uids(col, path, name)[1], {}
    arr = _one_array(col)
    if pa.types.is_floating(arr.type) or pa.types.is_integer(arr.type):
        return arr.to_numpy(zero_copy_only=False), {}
    return arr, {}
