"""Progress reporting through one small callable: ``progress(desc=..., total=...) -> bar``.

A bar has ``update(n)``, ``set_postfix(dict)`` and ``close()``. Library code takes the callable and never
prints; the CLI passes :func:`tqdm_progress`, tests and libraries get :class:`NoProgress`.
"""

from __future__ import annotations


class NoProgress:
    def __init__(self, *args, **kwargs):
        pass

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def tqdm_progress(desc: str, total: int, unit: str = "shard"):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)
