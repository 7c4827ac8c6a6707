"""``python -m slmc`` runs the CLI."""

from slmc.cli.main import main

main()
