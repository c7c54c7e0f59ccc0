from open_clip_train.main import *  # noqa: F401,F403
from open_clip_train.main import main  # noqa: F401
