"""Command-line interface: thin typer commands that parse, call the rooms below and print."""
