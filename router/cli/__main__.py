"""``python -m router.cli``: the same as the ``hybridgate`` command."""

from router.cli import main

main()
