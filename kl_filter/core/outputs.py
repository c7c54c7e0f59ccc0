"""Outputs never destroy inputs: every command checks all its output paths against all its inputs before any work.

Each command lists what it writes (:class:`Out`) and what it reads (:class:`In`) and calls :func:`check` first.
Refused, with one line naming the output and the input it would hurt:

* an output that is an input (the same path, a symlink to it, or a hard link of an input file);
* an output inside an input directory (``--save_path POOL/x.npy``, ``--scores_dir POOL``), or an input
  directory inside an output directory (the pool inside ``--scores_dir``); for a directory that is replaced as
  a whole (the report), any input inside it;
* two outputs at one path (``--stats`` equal to ``--save_path``), or one inside another that is a file;
* a file output that names a directory (a trailing ``/``, ``.`` or ``..``);
* an output file that exists and is not a regular file (a directory, a device node, a FIFO): files are only
  ever replaced when they are regular files; an output directory that exists as a file;
* an output directory that is not empty and was not made by kl-filter. A directory this tool makes holds a
  marker file, :data:`MARKER`, naming its kind (written by :func:`claim_dir`); a directory of another kind is
  refused too (``inspect --out SCORES_DIR`` would delete the score files).

A directory without a marker is checked by its kind's registered layout (:mod:`kl_filter.core.layouts`: each
command registers the kinds it writes, with how to recognise one made before markers existed).

Paths are compared after resolving symlinks (local paths) or as normalised URLs (same protocol and path).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass

from kl_filter.core.errors import KLFilterError
from kl_filter.core.fspath import is_local, url_to_fs
from kl_filter.core.layouts import MARKER, first_foreign, layout


@dataclass(frozen=True)
class Out:
    """An output: a ``file`` (replaced atomically) or a ``dir`` (written into; ``replace``: replaced whole).
    ``marker``: the kind of directory kl-filter makes there (a non-empty directory must carry it); None for a
    directory that may be any user directory (e.g. ``embed --out`` adding a family to an existing pool)."""

    path: str
    flag: str
    kind: str = "file"
    marker: str | None = None
    replace: bool = False


@dataclass(frozen=True)
class In:
    """An input file or directory (whichever it is on disk)."""

    path: str
    flag: str


@dataclass
class _Resolved:
    path: str          # as the user gave it
    flag: str
    key: str           # comparable form: resolved local path, or protocol + path
    fs: object
    p: str             # the path on fs
    local: bool
    kind: str | None   # "file", "dir", "other" (device, FIFO, socket), or None when absent
    what: str = ""     # for "other": what it is


def _resolve(path: str, flag: str) -> _Resolved:
    fs, p = url_to_fs(path)  # unknown protocol / missing package: one line, here, before any work
    local = is_local(path)
    if local:
        key = os.path.realpath(p)
        try:
            st = os.stat(p)
        except FileNotFoundError:
            return _Resolved(path, flag, key, fs, p, True, None)
        except OSError as e:
            raise KLFilterError(f"{flag}: cannot access ({e.strerror or e})", path) from e
        if stat.S_ISDIR(st.st_mode):
            kind, what = "dir", ""
        elif stat.S_ISREG(st.st_mode):
            kind, what = "file", ""
        else:
            kind, what = "other", _what(st.st_mode)
        return _Resolved(path, flag, key, fs, p, True, kind, what)
    proto = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    key = f"{proto}://{p.rstrip('/')}"
    try:
        info = fs.info(p)
        kind = {"directory": "dir", "file": "file"}.get(info.get("type"), "other")
    except FileNotFoundError:
        kind = None
    except Exception as e:  # noqa: BLE001 - a backend's failure (credentials, network): one line
        raise KLFilterError(f"{flag}: cannot access ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})",
                            path) from e
    return _Resolved(path, flag, key, fs, p, False, kind, "")


def _what(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _inside(a: str, b: str) -> bool:
    """Is ``a`` strictly inside directory ``b`` (both comparable keys)?"""
    b = b.rstrip("/") + "/"
    return a.startswith(b) and a != b.rstrip("/")


def _same(a: _Resolved, b: _Resolved) -> bool:
    if a.key == b.key:
        return True
    if a.local and b.local and a.kind and b.kind:
        try:
            return os.path.samefile(a.p, b.p)  # hard links
        except OSError:
            return False
    return False


_MARKER_MAX_BYTES = 1 << 16  # a marker is one short JSON line


def marker_kind(path: str) -> str | None:
    """The kind a kl-filter marker in directory ``path`` names (None: no marker, or not a readable one)."""
    from kl_filter.core.inputs import load_json

    fs, p = url_to_fs(path)
    try:  # a FIFO, a device or a huge file there is no marker: never opened or read whole
        doc = load_json(f"{p.rstrip('/')}/{MARKER}", "marker", _MARKER_MAX_BYTES, fs=fs)
        kind = doc.get("kind") if isinstance(doc, dict) else None
        return kind if isinstance(kind, str) else None
    except (OSError, KLFilterError):
        return None


def claim_dir(path: str, kind: str) -> None:
    """Create directory ``path`` if missing and mark it as kl-filter's (of ``kind``), unless it already is."""
    from kl_filter.core.atomic import makedirs, write_bytes

    layout(kind)
    makedirs(path)
    if marker_kind(path) != kind:
        write_bytes(f"{path.rstrip('/')}/{MARKER}", marker_bytes(kind))


def marker_bytes(kind: str) -> bytes:
    """The content of a marker file of ``kind``."""
    return json.dumps({"kind": kind, "tool": "kl-filter",
                       "note": "made by kl-filter, which may replace what it wrote here"}).encode() + b"\n"


def _entries(r: _Resolved) -> list[str]:
    try:
        return sorted(os.path.basename(e.rstrip("/")) for e in r.fs.ls(r.p, detail=False))
    except OSError as e:
        raise KLFilterError(f"{r.flag}: cannot list the directory ({getattr(e, 'strerror', None) or e})", r.path) from e


def _check_existing_parent(o: _Resolved) -> None:
    """The nearest existing ancestor of a local output must be a directory (else it cannot be created)."""
    if not o.local or o.kind is not None:
        return
    d = os.path.dirname(o.key)
    while d and not os.path.lexists(d):
        d = os.path.dirname(d)
    if d and not os.path.isdir(d):
        raise KLFilterError(f"{o.flag}: cannot be created: {d} is a file, not a directory", o.path)


def _check_one(o: _Resolved, spec: Out) -> None:
    _check_existing_parent(o)
    if spec.kind == "file":
        if o.path.endswith(("/", os.sep)) or os.path.basename(o.path) in (".", ".."):
            # a trailing '/' names a directory: resolved paths lose it, and `newdir/` once became file `newdir`
            raise KLFilterError(f"{o.flag} ends with {os.path.basename(o.path) or '/'!r}: it names a directory, "
                                "not a file", o.path)
        if o.kind == "dir":
            raise KLFilterError(f"{o.flag} is a directory, not a file: not replaced", o.path)
        if o.kind == "other":
            raise KLFilterError(f"{o.flag} is {o.what or 'not a regular file'}, not a regular file: not replaced",
                                o.path)
        return
    if o.kind in ("file", "other"):
        raise KLFilterError(f"{o.flag} must be a directory; it is {'a file' if o.kind == 'file' else o.what}",
                            o.path)
    if o.kind is None or spec.marker is None:
        return
    names = _entries(o)
    if not [n for n in names if n != MARKER]:
        return
    have = marker_kind(o.path)
    if have == spec.marker:
        return
    if have is not None:
        raise KLFilterError(f"{o.flag} is a kl-filter {have} directory, not a {spec.marker} directory: not "
                            "written into", o.path)
    recognise = layout(spec.marker)
    bad = recognise(o.fs, o.p, names) if recognise else first_foreign(names, lambda n: False)
    if bad is not None:
        what = (f"is not a kl-filter {spec.marker} (it is not empty and was not made by kl-filter: it holds {bad!r}"
                f" and no {MARKER} marker)" if recognise is None
                else f"is not empty and was not made by kl-filter (it holds {bad!r}; no {MARKER} marker)")
        raise KLFilterError(f"{o.flag} {what}: not {'replaced' if spec.replace else 'written into'}; choose a new "
                            "or empty directory", o.path)


def check(outputs: list[Out], inputs: list[In]) -> None:
    """Refuse (one :class:`KLFilterError` line) any output that could destroy an input or user data; see the
    module docstring. Call it before any work; it writes nothing."""
    for spec in outputs:
        if spec.marker is not None:
            layout(spec.marker)  # a kind nobody registered is a bug: raised on every call, not only when it matters
    outs = [(spec, _resolve(spec.path, spec.flag)) for spec in outputs if spec.path]
    ins = [_resolve(i.path, i.flag) for i in inputs if i.path]
    for spec, o in outs:
        for i in ins:
            if _same(o, i):
                raise KLFilterError(f"{o.flag} is {i.flag} ({i.path}): an output never replaces an input", o.path)
            if i.kind == "dir" and _inside(o.key, i.key):
                raise KLFilterError(f"{o.flag} is inside {i.flag} ({i.path}): outputs are never written into an "
                                    "input directory", o.path)
            if spec.kind == "dir" and _inside(i.key, o.key) and (i.kind == "dir" or spec.replace):
                raise KLFilterError(f"{i.flag} ({i.path}) is inside {o.flag}: "
                                    + ("it would be replaced with it" if spec.replace
                                       else "outputs are never written around an input"), o.path)
        _check_one(o, spec)
    for a in range(len(outs)):
        for b in range(a + 1, len(outs)):
            (sa, oa), (sb, ob) = outs[a], outs[b]
            if _same(oa, ob):
                raise KLFilterError(f"{oa.flag} and {ob.flag} are the same path", oa.path)
            for (s1, o1), (s2, o2) in (((sa, oa), (sb, ob)), ((sb, ob), (sa, oa))):
                if s1.kind == "file" and _inside(o2.key, o1.key):
                    raise KLFilterError(f"{o2.flag} ({o2.path}) would be inside {o1.flag}, which is a file", o1.path)
            for (s1, o1), (s2, o2) in (((sa, oa), (sb, ob)), ((sb, ob), (sa, oa))):
                if s1.kind == "dir" and s1.replace and _inside(o2.key, o1.key):
                    raise KLFilterError(f"{o2.flag} ({o2.path}) is inside {o1.flag}, which is replaced as a whole",
                                        o1.path)


def input_files(values) -> list[str]:
    """The existing local files among a plugin's parameter values: strings, found anywhere inside lists and
    mappings (a cuts recipe holds each member's parameters, e.g. its ``target_embeddings``): its assets, which
    outputs must not replace."""
    return [path for path, _ in _input_files_keyed(values)]


def _input_files_keyed(values, key: str | None = None) -> list[tuple[str, str | None]]:
    """``(path, the name of the innermost parameter holding it)`` per input file of :func:`input_files`. Walked
    without recursion; a container met twice (a YAML alias) is walked once, so a cycle cannot loop."""
    from kl_filter.core.fspath import is_url

    out, todo, seen = [], [(v, key) for v in values][::-1], set()
    while todo:
        x, k = todo.pop()
        if isinstance(x, (dict, list, tuple)):
            if id(x) in seen:
                continue
            seen.add(id(x))
            items = [(v, str(n)) for n, v in x.items()] if isinstance(x, dict) else [(v, k) for v in x]
            todo.extend(items[::-1])
        elif isinstance(x, str) and x and not is_url(x) and os.path.isfile(x):
            out.append((x, k))
    return out


def check_run(flt, metadata_dir: str, save_path: str | None, ctx, extra_inputs=()) -> None:
    """:func:`check` for one filter run (``select``, ``run``, ``demo``, ``inspect``): the UID file and its sidecar,
    the scores directory, and ``--stats`` when the run will write it, against the pool, the filter's asset files
    (paths among its parameters) and ``extra_inputs`` (``(path, flag)``, e.g. the recipe file)."""
    from kl_filter.core.fspath import url_to_fs

    outs, ins = [], [In(metadata_dir, "--metadata_dir")]
    if save_path:
        outs += [Out(save_path, "--save_path"), Out(save_path + ".json", "--save_path's sidecar")]
    if ctx.scores_dir:
        outs.append(Out(ctx.scores_dir, "--scores_dir", "dir", marker="scores"))
    if ctx.stats:
        fs, p = url_to_fs(ctx.stats)
        if ctx.overwrite or not fs.exists(p):  # written by this run (else only read)
            outs += [Out(ctx.stats, "--stats"), Out(ctx.stats + ".parts", "--stats partials", "dir", marker="parts")]
        else:
            ins.append(In(ctx.stats, "--stats"))
    params = flt.params() if hasattr(flt, "params") else {}
    for path, key in _input_files_keyed([params]) if isinstance(params, dict) else ():
        ins.append(In(path, f"--{key}" if key else "a filter parameter"))
    ins += [In(p, flag) for p, flag in extra_inputs]
    check(outs, ins)
