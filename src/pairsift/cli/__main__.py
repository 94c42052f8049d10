"""`python -m pairsift.cli`: the same as the `pairsift` command."""

from . import app

app()
