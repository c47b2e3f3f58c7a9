"""``python -m transport``: the same as the ``cisis-transport`` command."""

import sys

from transport.cli import main

sys.exit(main())
