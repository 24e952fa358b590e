"""``python -m stampede`` runs the CLI."""

from stampede.cli import main

main()
