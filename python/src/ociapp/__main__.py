"""``python -m ociapp``: the same command as the ``ociapp`` console script."""

import sys

from .cli import main

sys.exit(main())
