"""``python -m knitwork_cli`` is the ``knitwork`` command."""

import sys

from knitwork_cli.main import main

sys.exit(main())
