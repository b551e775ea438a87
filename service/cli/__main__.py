"""`python -m service.cli`: the `parry` command."""

import sys

from service.cli.main import main

sys.exit(main())
