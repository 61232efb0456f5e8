"""``python -m edgert`` is the ``edgert`` command (useful where the script is not on PATH)."""
from edgert.cli import main

main()
