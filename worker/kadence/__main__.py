"""``python -m kadence`` is the ``kadence`` command (used where no entry point is installed)."""

from kadence.cli import main

main()
