"""pairsift: turn raw web image-text pairs into a smaller, cleaner, fairer CLIP training set."""

from .api import *  # noqa: F403 - the API is the package's surface
from .api import __all__ as _api
from .workspace import Workspace

__version__ = "0.1.0"
__all__ = ["Workspace", *_api]
