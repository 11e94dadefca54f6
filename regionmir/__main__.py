"""`python -m regionmir`: the same as the `regionmir` command."""

from regionmir.cli.app import main

main()
