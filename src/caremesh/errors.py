"""The caremesh exception tree.

Exceptions carry coordinates (stage, topic, partition, offset, message id, resource type),
never payloads, patient identifiers, pseudonyms or keys.

    CaremeshError
    ├── ConfigurationError          bad settings, rule files or pathway definitions
    ├── KafkaUnavailableError       the broker did not answer or refused a write (transient)
    ├── LocalKafkaError             the local broker under deploy/kafka could not be run
    ├── LocalHapiError              the local HAPI FHIR server under deploy/hapi could not be run
    ├── TopicMismatchError          an existing topic differs from the catalogue
    ├── RejectedInputError          input that can never be processed (goes to deadletter.v1)
    │   ├── InvalidFhirError        not FHIR, or fails validation
    │   └── InvalidHl7Error         not an HL7 v2 message we accept
    ├── ConsentNotReadyError        consent state has not caught up with the ledger (transient)
    └── PseudonymisationError       a rule could not be applied with processingErrors=raise
"""

from __future__ import annotations


class CaremeshError(Exception):
    """Base of every error raised by caremesh."""


class ConfigurationError(CaremeshError):
    """Settings, a rule file or a pathway definition is invalid."""


class KafkaUnavailableError(CaremeshError):
    """The broker could not be reached or did not acknowledge a write in time."""


class LocalKafkaError(CaremeshError):
    """The local single-node broker could not be fetched, formatted, started or stopped."""


class LocalHapiError(CaremeshError):
    """The local HAPI FHIR server (deploy/hapi) could not be built, started or stopped."""


class TopicMismatchError(CaremeshError):
    """A topic exists with a configuration that differs from the catalogue."""


class RejectedInputError(CaremeshError):
    """Input that will never be processable; it is dead-lettered with `code`.

    `code` is a stable machine-readable error code; `detail` is a human-readable reason that
    must never contain payload fragments or identifiers.
    """

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class InvalidFhirError(RejectedInputError):
    """The input is not valid FHIR JSON for a supported release."""


class InvalidHl7Error(RejectedInputError):
    """The input is not an HL7 v2 message that caremesh accepts."""


class ConsentNotReadyError(CaremeshError):
    """Consent state is still recovering; the decision must be retried, never defaulted."""


class PseudonymisationError(CaremeshError):
    """A pseudonymisation rule failed on a node (processingErrors=raise)."""
