"""pairsift: turn raw web image-text pairs into a smaller, cleaner, fairer CLIP training set."""

__version__ = "0.1.0"  # before the imports below: submodules read it

from .api import *  # noqa: E402, F403 - the API is the package's surface
from .api import __all__ as _api  # noqa: E402
from .workspace import Workspace  # noqa: E402

__all__ = ["Workspace", *_api]
