"""``python -m speedpose`` (used by ``torchrun -m speedpose train ...``)."""

import sys

from speedpose.cli import main

sys.exit(main())
