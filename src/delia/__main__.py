"""`python -m delia` runs the CLI."""

from delia.cli import main

main()
