"""Readers of sources and writers of exports."""
