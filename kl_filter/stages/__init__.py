"""Stages: the framework that runs scorers over a pool, once per shard, resumable, into ``--scores_dir``.

    stats.py    reference statistics: read, extend or compute them for the scorers that declare a need
    scores.py   every declared column computed once per shard, resumed and reused by provenance
    buckets.py  BucketScorers: rows gathered into buckets across shards, scored, scattered back (locked work dir)
    weights.py  the importance-weights file (one row per uid: weight, log_weight)
"""
