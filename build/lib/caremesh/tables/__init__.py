"""Topics folded into memory: consent ledger, organisations, dead-letter keys."""
