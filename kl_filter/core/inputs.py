"""Every file the tool takes besides the pool, read one way: checked before it is opened, bounded before it is
parsed, validated before it is used.

The pool has its own reader (:mod:`kl_filter.pool.reader`); everything else a user hands over (the pool's
``embeddings.json``, a UID file's sidecar, recipe files, prompt and target embeddings, saved centroids) comes
through here, with the pool's guarantees:

* **Regular files only.** The path is checked with ``stat`` (fsspec ``info`` for a URL) before anything opens it:
  a FIFO (whose ``open`` blocks until a writer appears), a device (``/dev/zero`` never ends), a directory or a
  dangling symlink is one line naming it, never opened (:func:`regular_file`).
* **Sizes before allocation.** A text file is refused above its cap before it is read, and never more than the
  cap is read (a remote store's size may lie); an ``.npy`` header is parsed first and its shape × itemsize is
  checked against the file's size and the caller's cap before a byte of data is allocated
  (:mod:`kl_filter.core.npyfile`; ``allow_pickle`` is never on: object, structured, complex and string dtypes are
  refused from the header).
* **Structure before use.** Text must be UTF-8 (a byte-order mark is accepted and dropped). JSON and YAML
  nesting is measured without recursion before the parser runs (:func:`json_depth`: strings blanked, brackets
  counted in one vectorised pass; YAML: the parser's event stream, which is iterative); YAML anchors that refer
  to themselves (a cycle) are refused and aliases are bounded by the number of nodes they expand to (the
  "billion laughs"), so no consumer that walks the document can recurse or blow up. Each reader then checks its
  document's schema and says what is wrong in one line.

Every failure is a :class:`~kl_filter.core.errors.KLFilterError` naming the file: one line, exit status 2.
"""

from __future__ import annotations

import re

import numpy as np

from kl_filter.core.errors import KLFilterError, MissingDependency

MAX_DEPTH = 64              # nesting levels of a JSON or YAML document (ours use at most 5)
MAX_YAML_NODES = 100_000    # nodes a YAML document may expand to, aliases included


# ---- the file itself --------------------------------------------------------------------------------------
def regular_file(path, what: str = "file", fs=None):
    """``(fs, path on fs, size)`` of an input that is a regular file; one line naming ``path`` otherwise (no
    such file, dangling symlink, FIFO, device, socket, directory). Never opens it. ``fs``: ``path`` is already
    a path on this fsspec filesystem (else a local path or URL, :func:`kl_filter.core.fspath.url_to_fs`)."""
    from kl_filter.core.fspath import url_to_fs
    from kl_filter.core.npyfile import check_regular_file

    fs, p = (fs, path) if fs is not None else url_to_fs(path)
    try:
        size = check_regular_file(fs, p, what)
    except KLFilterError as e:  # name the path as the user gave it, and what the file was to be
        problem = str(e).removeprefix(f"{p}: ")
        if problem.startswith("no such"):
            problem = f"{what} not found"
        else:
            problem = f"{what} {problem}" if problem.startswith("is ") else f"{what}: {problem}"
        raise KLFilterError(problem, str(path)) from e
    return fs, p, size


def _short(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:200] if s else type(e).__name__


def read_bytes(path, what: str, max_bytes: int, fs=None) -> bytes:
    """The whole content of a regular file of at most ``max_bytes`` bytes (more is refused, never read)."""
    fs, p, size = regular_file(path, what, fs)
    if size > max_bytes:
        raise KLFilterError(f"{what} of {size:,} bytes (at most {max_bytes:,})", str(path))
    try:
        with fs.open(p, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise KLFilterError(f"{what} unreadable ({e.strerror or _short(e)})", str(path)) from e
    if len(data) > max_bytes:  # the size was stale or a remote store's answer was wrong
        raise KLFilterError(f"{what} of more than {max_bytes:,} bytes (at most {max_bytes:,})", str(path))
    return data


def decode_text(data: bytes, path, what: str) -> str:
    """``data`` as UTF-8 text (a leading byte-order mark dropped); one line naming the first bad byte."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise KLFilterError(f"{what} is UTF-16 text; save it as UTF-8", str(path))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise KLFilterError(f"{what} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}"
                            + ("; a binary file?" if b"\0" in data[:4096] else "") + ")", str(path)) from None
    if "\0" in text:
        raise KLFilterError(f"{what} is not text (it holds NUL bytes; a binary file?)", str(path))
    return text


def read_text(path, what: str, max_bytes: int, fs=None) -> str:
    """A regular file of at most ``max_bytes`` bytes as UTF-8 text."""
    return decode_text(read_bytes(path, what, max_bytes, fs), path, what)


# ---- JSON ---------------------------------------------------------------------------------------------------
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_OPEN, _CLOSE = np.zeros(256, np.int8), np.zeros(256, np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_CLOSE[[ord("]"), ord("}")]] = 1


def json_depth(text: str) -> int:
    """The deepest bracket nesting of a JSON text, measured without parsing or recursion (strings blanked
    first, so brackets inside them do not count)."""
    code = np.frombuffer(_JSON_STRING.sub('""', text).encode("utf-8", "surrogatepass"), np.uint8)
    if not code.size:
        return 0
    return int(np.cumsum(_OPEN[code].astype(np.int32) - _CLOSE[code]).max(initial=0))


def _unique_keys(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = next(k for i, k in enumerate(keys) if k in keys[:i])
        raise ValueError(f"key {twice!r:.60} appears twice in one object: which one is meant?")
    return dict(pairs)


def parse_json(text: str, path, what: str, max_depth: int = MAX_DEPTH):
    """A JSON document no deeper than ``max_depth`` levels (Python's parser recurses once per level) whose
    objects name each key once (``json.loads`` silently keeps the last of ``{"logit_scale": 100, "logit_scale":
    1e-300}``)."""
    depth = json_depth(text)
    if depth > max_depth:
        raise KLFilterError(f"{what} is nested {depth:,} levels deep (at most {max_depth})", str(path))
    try:
        import json

        return json.loads(text, object_pairs_hook=_unique_keys)
    except ValueError as e:
        raise KLFilterError(f"{what} is not valid JSON ({_short(e)})", str(path)) from e


def load_json(path, what: str, max_bytes: int, max_depth: int = MAX_DEPTH, fs=None):
    """A JSON file: regular, at most ``max_bytes``, UTF-8, at most ``max_depth`` levels. Its schema is the
    caller's to check."""
    return parse_json(read_text(path, what, max_bytes, fs), path, what, max_depth)


# ---- YAML ---------------------------------------------------------------------------------------------------
def _yaml_loader():
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # LibYAML when built with it: the same documents


def _yaml_error(e, path, what: str) -> KLFilterError:
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(e, "problem", None) or _short(e)
    return KLFilterError(f"{what} is not valid YAML ({where}{problem})", str(path))


def check_yaml_shape(text: str, path, what: str, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_YAML_NODES):
    """Refuse a YAML text nested deeper than ``max_depth``, with an alias inside the node it names (a cycle),
    expanding (aliases counted as the nodes they stand for) to more than ``max_nodes`` nodes, or with a key twice
    in one mapping (``name: a`` then ``name: b``: the loader silently keeps the last). Reads the parser's event
    stream (iterative), so a hostile depth never reaches a recursive composer."""
    import yaml

    # one frame per open collection: [anchor, expanded nodes, expanded depth below it, keys seen (a mapping's;
    # None for a sequence), nodes started directly in it (even: the next one is a key)]
    stack: list[list] = [[None, 0, 0, None, 0]]
    anchors: dict = {}  # anchor -> (expanded nodes, expanded depth) of the node it names

    def node(ev, line: int):
        """A node starts in the innermost collection: in a mapping's key position, a scalar key must be new."""
        top = stack[-1]
        if top[3] is not None and top[4] % 2 == 0 and isinstance(ev, yaml.ScalarEvent):
            key = (ev.value, ev.implicit[0])  # plain `1` and quoted "1" are different keys
            if key in top[3]:
                where = f"line {line}" if line == top[3][key] else f"lines {top[3][key]} and {line}"
                raise KLFilterError(f"{what}: key {ev.value!r:.60} appears twice in one mapping ({where}): which "
                                    "one is meant?", str(path))
            top[3][key] = line
        top[4] += 1

    def add(nodes: int, depth: int, line: int):
        top = stack[-1]
        top[1] += nodes
        top[2] = max(top[2], depth)
        if sum(f[1] for f in stack) > max_nodes:
            raise KLFilterError(f"{what} expands to more than {max_nodes:,} nodes (line {line}; aliases of "
                                "aliases: a 'billion laughs' document?)", str(path))
        if len(stack) - 1 + depth > max_depth:
            raise KLFilterError(f"{what} is nested more than {max_depth} levels deep (line {line})", str(path))

    try:
        for ev in yaml.parse(text, Loader=_yaml_loader()):
            line = ev.start_mark.line + 1 if ev.start_mark is not None else 0
            if isinstance(ev, (yaml.AliasEvent, yaml.ScalarEvent, yaml.CollectionStartEvent)):
                node(ev, line)
            if isinstance(ev, yaml.AliasEvent):
                if ev.anchor not in anchors:
                    if any(f[0] == ev.anchor for f in stack):
                        raise KLFilterError(f"{what}: alias *{ev.anchor} (line {line}) is inside the node it names "
                                            "(a cycle)", str(path))
                    raise KLFilterError(f"{what}: alias *{ev.anchor} (line {line}) names no anchor", str(path))
                add(*anchors[ev.anchor], line)
            elif isinstance(ev, yaml.ScalarEvent):
                if ev.anchor:
                    anchors[ev.anchor] = (1, 0)
                add(1, 0, line)
            elif isinstance(ev, yaml.CollectionStartEvent):
                anchors.pop(ev.anchor, None)  # redefined: the old node no longer answers to it
                stack.append([ev.anchor, 1, 0, {} if isinstance(ev, yaml.MappingStartEvent) else None, 0])
                if len(stack) - 1 > max_depth:
                    raise KLFilterError(f"{what} is nested more than {max_depth} levels deep (line {line})",
                                        str(path))
            elif isinstance(ev, yaml.CollectionEndEvent):
                anchor, nodes, depth, _, _ = stack.pop()
                if anchor:
                    anchors[anchor] = (nodes, depth + 1)
                add(nodes, depth + 1, line)
    except yaml.YAMLError as e:
        raise _yaml_error(e, path, what) from e


def parse_yaml(text: str, path, what: str, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_YAML_NODES):
    """A YAML document (safe loading: plain data only) that passed :func:`check_yaml_shape`."""
    import yaml

    check_yaml_shape(text, path, what, max_depth, max_nodes)
    try:
        return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a safe loader (CSafeLoader / SafeLoader)
    except yaml.YAMLError as e:
        raise _yaml_error(e, path, what) from e


def load_yaml(path, what: str, max_bytes: int, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_YAML_NODES,
              fs=None):
    """A YAML file: regular, at most ``max_bytes``, UTF-8, bounded in depth and expansion, no cycles."""
    return parse_yaml(read_text(path, what, max_bytes, fs), path, what, max_depth, max_nodes)


# ---- NumPy arrays -------------------------------------------------------------------------------------------
def _shape_words(shapes) -> str:
    return " or ".join("(" + ", ".join("n" if s is None else str(s) for s in shape)
                       + ("," if len(shape) == 1 else "") + ")" for shape in shapes)


def header_check(shapes=None, kinds: str = "f", max_bytes: int | None = None, allowed=(), member: str | None = None):
    """A check of an npy header (for :func:`kl_filter.core.npyfile.load_npy` / ``NpzReader.read``): a plain dtype of
    ``kinds`` (or one of ``allowed``), a shape matching one of ``shapes`` (tuples; None matches any length, and
    a non-empty first axis is required), at most ``max_bytes`` of data. ValueError otherwise (naming the npz
    ``member`` when given)."""
    from kl_filter.core.npyfile import check_plain_dtype

    def check(h):
        try:
            _check(h)
        except ValueError as e:
            raise ValueError(f"member {member!r}: {e}" if member else str(e)) from None

    def _check(h):
        check_plain_dtype(h, kinds, allowed)
        if shapes is not None:
            fits = [s for s in shapes if len(s) == len(h.shape)
                    and all(w is None or w == g for w, g in zip(s, h.shape))]
            if not fits:
                raise ValueError(f"has shape {h.shape}, expected {_shape_words(shapes)}")
            if h.shape and h.shape[0] == 0:
                raise ValueError(f"has shape {h.shape}: no rows")
        if max_bytes is not None and h.nbytes > max_bytes:
            raise ValueError(f"header claims shape {h.shape} of {h.dtype} ({h.nbytes:,} bytes), more than the "
                             f"{max_bytes:,} bytes allowed")
    return check


def load_npy(path, what: str, shapes=None, kinds: str = "f", max_bytes: int | None = None,
             finite: bool = True, fs=None) -> np.ndarray:
    """An ``.npy`` file whose header passes :func:`header_check` and whose byte count is what the file holds,
    read without pickle; ``finite``: NaN or inf refused (naming the first bad row)."""
    from kl_filter.core.npyfile import load_npy as _load, read_errors

    fs, p, size = regular_file(path, what, fs)
    try:
        with fs.open(p, "rb") as f:
            arr = _load(f, size, header_check(shapes, kinds, max_bytes))
    except KLFilterError:
        raise
    except read_errors() as e:
        raise KLFilterError(f"{what}: not a plain .npy array ({_short(e)})", str(path)) from e
    if finite:
        check_finite(arr, path, what)
    return arr


def check_finite(arr: np.ndarray, path, what: str) -> None:
    """One line naming the first row holding NaN or inf (floats only; one block at a time)."""
    if arr.dtype.kind not in "fc" or arr.size == 0:
        return
    rows = arr.reshape(len(arr), -1) if arr.ndim > 1 else arr.reshape(-1, 1)
    for i in range(0, len(rows), 65536):
        bad = np.flatnonzero(~np.isfinite(rows[i: i + 65536]).all(axis=1))
        if bad.size:
            raise KLFilterError(f"{what} row {i + int(bad[0])} has NaN or inf values", str(path))


def load_array(path: str, key: str | None = None, hint: str = "") -> np.ndarray:
    """A float32 matrix from ``.npy`` or a torch ``.pt`` (an array, a tensor, or a dict holding ``key``).

    Nothing is unpickled that could run code: ``.npy`` is read by :mod:`kl_filter.core.inputs` (header checked before
    anything is allocated, never unpickled) and ``.pt`` with
    ``torch.load(weights_only=True)`` (tensors, dicts, lists, numbers; and NumPy arrays, which DataComp's centroid
    files are: NumPy's array-reconstruction functions are allowed for this load only). A file that needs anything
    else is refused with one line and the hint to convert it to ``.npy``.
    """
    import os

    if not os.path.exists(path):
        raise KLFilterError(f"file not found ({hint})" if hint else "file not found", path)
    if not os.path.isfile(path):
        raise KLFilterError("not a regular file", path)
    if path.endswith(".npy"):  # the header first (kl_filter.core.inputs): a shape the file does not hold is refused
        obj = load_npy(path, "array file", [(None, None)], kinds="fiu", finite=False)
    else:
        obj = _torch_load(path)
        if isinstance(obj, dict):
            if key not in obj:
                raise KLFilterError(f"no {key!r} in this file (keys: {sorted(map(str, obj))})", path)
            obj = obj[key]
        obj = obj.numpy() if hasattr(obj, "numpy") else obj
    try:
        obj = np.asarray(obj, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise KLFilterError(f"not a numeric matrix ({_first_line(e)})", path) from e
    if obj.ndim != 2:
        raise KLFilterError(f"expected a 2-d matrix, got shape {obj.shape}", path)
    return obj


def _torch_load(path: str):
    """``torch.load(weights_only=True)``, with NumPy arrays allowed (and nothing else beyond torch's own list)."""
    import pickle

    try:
        import torch
    except ImportError as e:
        raise MissingDependency(f"reading {path} needs torch: pip install torch, or convert it to .npy") from e
    try:
        reconstruct = np._core.multiarray._reconstruct
    except AttributeError:  # NumPy < 2
        reconstruct = np.core.multiarray._reconstruct
    numpy_arrays = [reconstruct, np.ndarray, np.dtype] + [type(np.dtype(t)) for t in (
        np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.bool_)]
    try:
        with torch.serialization.safe_globals(numpy_arrays):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e) or "not an allowed global" in str(e):
            raise KLFilterError(f"refused: loading it would unpickle Python objects other than tensors and arrays "
                                f"({_unsupported(e)}); save the array as .npy instead", path) from e
        raise KLFilterError(f"not a torch tensor file ({_unsupported(e)})", path) from e
    except (RuntimeError, OSError, EOFError, ValueError, AttributeError, TypeError) as e:
        raise KLFilterError(f"not a torch tensor file ({_first_line(e)})", path) from e


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _unsupported(e: Exception) -> str:
    """What torch's long message says was refused (e.g. ``io.open``), in a few words."""
    import re

    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
    if m:
        return f"it calls {m.group(1)}"
    _, _, rest = str(e).partition("WeightsUnpickler error:")
    lines = [x.strip() for x in rest.splitlines() if x.strip()]
    return lines[0][:200] if lines else _first_line(e)
