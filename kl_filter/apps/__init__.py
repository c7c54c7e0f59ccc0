"""The applications built on the library: nothing under ``kl_filter`` outside ``apps/`` imports them.

    cli/      the ``kl-filter`` command, one module per subcommand
    report/   the inspection report (``kl-filter inspect``)
    harness/  DataComp's resharder/train/evaluate, run unedited (``kl-filter harness``, ``reshard``)
    tiny/     the offline tiny track (``kl-filter track``): a small pool, students trained and evaluated on a CPU
"""
