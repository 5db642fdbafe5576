"""Real components run locally from the package registries, for tests and the demo."""
