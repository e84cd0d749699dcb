"""The `lfkit` command line (typer)."""
