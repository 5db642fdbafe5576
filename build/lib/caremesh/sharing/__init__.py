"""Care-team sharing: who is on a patient's care team, and who gets a resource."""
