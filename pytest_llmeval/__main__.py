"""``python -m pytest_llmeval``: the ``llmeval`` console."""

import sys

from .cli import main

sys.exit(main())
