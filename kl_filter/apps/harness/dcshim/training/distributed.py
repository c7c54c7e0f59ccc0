from open_clip_train.distributed import *  # noqa: F401,F403
