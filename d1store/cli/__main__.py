"""Run the command line as ``python -m d1store.cli``."""

from d1store.cli import main

main(prog_name="d1store")
