"""open_clip's trainer under the name DataComp's ``train.py`` imports (``training``, open_clip < 2.26)."""
