"""`runq demo`: placeholder until the sample home generator lands."""

import typer


def demo(ctx: typer.Context):
    """Generate a sample Guild home and run runq on it."""
    raise typer.Exit(0)
