"""pairsift: turn raw web image-text pairs into a smaller, cleaner, fairer CLIP training set."""

from .api import demo, embed, explain, export, filter_clip_score, ingest, score
from .workspace import Workspace

__version__ = "0.1.0"
__all__ = ["Workspace", "demo", "embed", "explain", "export", "filter_clip_score", "ingest",
           "score"]
