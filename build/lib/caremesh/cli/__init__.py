"""The `caremesh` command and its subcommand modules."""
