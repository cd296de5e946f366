"""`python -m matrixdir` is the `matrixdir` command."""

from matrixdir.cli import main

main()
