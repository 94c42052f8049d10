"""Orchestration: workspace I/O + stage algorithms + the engine, one module per command."""
