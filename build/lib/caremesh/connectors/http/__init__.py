"""What caremesh's HTTP services share: server setup, OperationOutcome, authentication."""
