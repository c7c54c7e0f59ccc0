"""Rules: a column to keep/drop, each resolving itself over the whole pool, then answering per shard.

    base.py           ``Rule`` and the built-ins ``Top`` (DataComp's threshold rule), ``Keep``, ``Uniform``,
                      ``Resample``; the registry (third parties: the ``kl_filter.rules`` entry-point group)
    kth.py            the exact distributed k-th largest value
    threshold.py      DataComp's quantile threshold
    uniform.py        histogram flattening (the KL paper's down-sampling)
    weights.py        importance-weight arithmetic: float64 sums, effective sample size, systematic resampling
    top_per_group.py  the k best rows of each group (a rule written in one file)
"""
