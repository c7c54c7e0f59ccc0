"""Files that run in DataComp's interpreter (``kl-filter harness --python PATH``), which need not have kl-filter.

This directory is what the harness puts on that interpreter's ``PYTHONPATH`` (and nothing else of kl-filter):

- ``training/``: DataComp's ``train.py`` imports ``training.main`` and ``training.distributed``, open_clip's
  trainer before 2.26; these two modules re-export ``open_clip_train`` (its name since 2.26). Used only where the
  interpreter has ``open_clip_train`` and no ``training``.
- ``kl_datacomp_run.py``: runs one of DataComp's scripts unedited (``runpy``) after registering the scales and
  open_clip model configs of ``kl_scales.json`` (the CPU scale ``tiny``) with DataComp's ``scale_configs`` and
  open_clip, as DataComp's own scales are: ``train.py --scale tiny`` then takes it like ``small``.
- ``kl_datacomp_probe.py``: checks, before any work, that the interpreter imports what DataComp's scripts import.

Every file here is standalone (standard library, and what DataComp's scripts themselves import).
"""
