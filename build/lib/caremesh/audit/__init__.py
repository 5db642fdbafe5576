"""Every FHIR AuditEvent the platform writes, built in one place."""
