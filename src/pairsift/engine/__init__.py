"""Engines run stage code over a workspace: in-process (``local``) by default."""
