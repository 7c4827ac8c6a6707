"""``python -m slmc`` runs the CLI."""

from slmc.cli import main

main()
