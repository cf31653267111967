from daemon_harness import swarm  # noqa: F401  (fixture)
