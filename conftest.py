"""This repository's pytest settings. The plugin needs none of them: it works in projects without a conftest.

Run outputs (``data/``: run folders, adapters, the metrics database) and the notebooks are never test
modules, whatever they contain.
"""

collect_ignore = ["data", "notebooks", "build", "dist"]
