"""``python -m ai_memory_sdk.cli``: the ``ai-memory`` command without its console script."""

import sys

from . import main

sys.exit(main())
