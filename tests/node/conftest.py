from node_harness import bootstrap_of  # noqa: F401  (fixture)
