"""bench/ holds scripts and one pytest-benchmark module; the overhead fixtures are data, not tests."""

collect_ignore = ["overhead"]
