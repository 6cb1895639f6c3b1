"""python -m tunescout: the tunescout command."""

from .cli import main

main()
