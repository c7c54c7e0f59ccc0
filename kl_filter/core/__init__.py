"""The core: types and I/O every other layer uses, importing nothing above it.

    errors.py    KLFilterError (one line, exit 2) and MissingDependency
    fspath.py    local paths and fsspec URLs (``::`` chains refused where they would write)
    atomic.py    atomic writes (temp file, then rename), locks, stale temp files
    inputs.py    the reading layer for every file besides the pool: regular files only, sizes and headers first
    npyfile.py   bounded .npy/.npz header parsing and reading
    outputs.py   outputs checked against inputs (never onto an input, a directory or a device); commands
                 register the layout of the directories they own
    uids.py      the subset file: DataComp's .npy of (u8, u8) uids, and its sidecar
    hashing.py   seeded per-uid hashing (splitmix64): samples, batches, buckets
    params.py    plugin parameters from ``__init__`` signatures (flags, recipe values)
    registry.py  the one registry class (built-ins plus entry points)
    progress.py  progress bars (tqdm) and a silent twin
    half.py      float16 → float32, NumPy's bits at about twice its speed (the reader's norm check, the kernels)
"""
