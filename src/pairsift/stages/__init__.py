"""Stage algorithms: plain functions over arrays and tables, no I/O, no progress bars."""
