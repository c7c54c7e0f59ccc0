"""The tiny track's sizes and hyper-parameters (:class:`TrackConfig`; :meth:`TrackConfig.quick`: the smoke run's)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrackConfig:
    """Sizes and hyper-parameters of a track run (:meth:`quick`: the smoke run's)."""

    pool: int = 16_000            # pool samples
    pool_shard: int = 2_000
    teacher_pairs: int = 12_000   # clean pairs for the teachers (disjoint from the pool)
    teacher_s_seen: int = 131_072  # samples seen by the small teacher (both teachers train side by side)
    teacher_l_seen: int = 98_304
    teacher_lr: float = 2e-3
    student_seen: int = 32_768     # samples seen by every student, whatever its subset size
    student_lr: float = 2e-3
    batch_size: int = 128
    warmup_frac: float = 0.1
    weight_decay: float = 0.2
    beta2: float = 0.98
    eval_scenes_per_class: int = 100
    eval_digits: int = 360
    eval_retrieval: int = 500
    kl_num_samples: int = 2_000
    """Reference samples N per modality for every KL recipe (the KL filter's ``num_samples``), unless the recipe
    sets its own ``num_samples`` or ``sample_ratio``.

    The filter's default, a ratio of 0.002 of the caption-filtered rows, is sized for DataComp's pools (up to
    25,600 samples at small scale). On this 16,000-row pool (12,491 rows pass the caption filter at pool seed 0)
    it gives N = 25: D_KL is bounded by log N = 3.2 and 22% of the rows sit at that ceiling, so a top-25% cut
    cannot order most of what it keeps. N = 2,000 raises the ceiling to log N = 7.6 while staying a sample (1/6
    of the filtered rows). Measured with this track's teachers, the rows at the ceiling fall from 22% to 0.15%
    (kl_l14_txt) and 0.03% (kl_b32_img), and the eighth of the rows whose own partner is among the samples is
    not favoured by the 25% cut (23% of them kept, 25% of the others). Scoring stays cheap (N x 16,000 dot
    products per family). The quick pool is 8x smaller, so :meth:`quick` keeps the same share of the pool (250).
    """
    negcliploss_batch_size: int = 2_000
    """Rows per random batch B of every negCLIPLoss recipe (the filter's ``batch_size``), unless the recipe sets its
    own; the passes stay the filter's default (10).

    The filter's default, 32,768 rows (the paper's B; also OpenAI CLIP's training batch), is sized for DataComp's
    pools: at small scale (12.8M rows) it is 1/390 of the pool, 390 batches per pass. On this 16,000-row pool it
    would be one batch, the whole pool: every pass the same partition, so the 10 passes average nothing. Keeping
    DataComp's SHARE instead (1/390: 41 rows) goes wrong the other way: the normaliser is a log-sum-exp over the
    batch, whose noise depends on B, not on the pool share, and over 41 rows it is mostly the pair itself and a
    few random rows (smaller than the teachers' own training batch of 128). B = 2,000 (1/8 of the pool) gives 8
    batches per pass, so the 10 partitions differ and their average is what the paper averages, and a batch large
    against the pool's caption vocabulary (each handwritten-digit caption is 0.3-0.7% of the pool at pool seed 0,
    7-14 copies per batch, as a frequent web caption recurs in a 32,768-row batch), which is what the normaliser
    sees. Measured at pool seed 0 (l14, top 30%): B = 128 (the teachers' batch), 2,000 and 16,000 (the whole
    pool) keep subsets with Jaccard 0.88 and 0.95 against B = 2,000's; B = 2,000 sits between the two ends.
    Scoring cost: 10 x 16,000 x 2,000 x 768 x 2 flops, seconds on 2 cores. :meth:`quick` keeps the same share of
    its 2,000-row pool (250)."""

    @classmethod
    def quick(cls) -> "TrackConfig":
        return cls(pool=2_000, pool_shard=1_000, teacher_pairs=2_000, teacher_s_seen=8_192, teacher_l_seen=4_096,
                   student_seen=6_144, eval_scenes_per_class=30, eval_digits=150, eval_retrieval=150,
                   kl_num_samples=250, negcliploss_batch_size=250)
