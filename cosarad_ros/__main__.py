"""``python -m cosarad_ros`` runs the ``cosarad`` CLI."""
import sys

from cosarad_ros.cli.main import main

sys.exit(main())
