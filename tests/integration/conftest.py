from daemon_harness import prepared_models, swarm  # noqa: F401  (fixtures)
