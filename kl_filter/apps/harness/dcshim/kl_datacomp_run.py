"""Run one of DataComp's scripts unedited, with kl-filter's extra scales registered: ``kl_datacomp_run.py SCRIPT ARGS``.

``python kl_datacomp_run.py train.py --scale tiny ...`` behaves as ``python train.py --scale tiny ...`` would if
DataComp's ``scale_configs.SCALE_CONFIGS`` had the scales of ``kl_scales.json`` (beside this file) and open_clip
knew the model configs of ``model_configs/``: the script's directory is ``sys.path[0]`` (as for ``python SCRIPT``),
``scale_configs`` is imported and given the extra scales (never replacing one of DataComp's), the model configs
are registered with ``open_clip.add_model_config``, then the script runs as ``__main__`` (``runpy``). Nothing of
DataComp is edited or copied. Standalone: it runs in DataComp's interpreter, which need not have kl-filter.
"""

import json
import os
import runpy
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def register_scales():
    import scale_configs  # DataComp's, from the script's directory

    with open(os.path.join(HERE, "kl_scales.json")) as f:
        extra = json.load(f)["scales"]
    for name, config in extra.items():
        scale_configs.SCALE_CONFIGS.setdefault(name, config)
    import open_clip

    open_clip.add_model_config(os.path.join(HERE, "model_configs"))


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: kl_datacomp_run.py SCRIPT [ARGS...]")
    script = os.path.abspath(sys.argv[1])
    # what `python SCRIPT` puts first on sys.path (this file's directory stays reachable through PYTHONPATH only
    # where the harness puts it there)
    sys.path[0] = os.path.dirname(script)
    register_scales()
    sys.argv = [script] + sys.argv[2:]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
