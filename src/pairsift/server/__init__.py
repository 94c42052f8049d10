"""The search web app (``pairsift serve``): FastAPI in ``app.py``, the page in ``static/``."""
