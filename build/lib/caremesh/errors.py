"""The caremesh exception tree.

Exceptions carry coordinates (stage, topic, partition, offset, message id, resource type),
never payloads, patient identifiers, pseudonyms or keys.

    CaremeshError
    ├── ConfigurationError          bad settings, rule files, pathway definitions, command usage
    ├── KafkaUnavailableError       the broker did not answer or refused a write (transient)
    ├── LocalKafkaError             the local broker (caremesh kafka up) could not be run
    ├── LocalHapiError              the local HAPI FHIR server (local/hapi.py) could not be run
    ├── TopicMismatchError          an existing topic differs from the catalogue
    ├── RejectedInputError          input that can never be processed (goes to deadletter.v1)
    │   ├── InvalidFhirError        not FHIR, or fails validation
    │   ├── InvalidHl7Error         not an HL7 v2 message we accept
    │   └── ConsentRequestError     a consent the consent API refuses (with its HTTP status)
    ├── RefusedRequestError         an HTTP request answered with an OperationOutcome (4xx/5xx)
    │   └── AuthRefusedError        no valid token (401) or no admitted role (403)
    ├── ConsentNotReadyError        consent state has not caught up with the ledger (transient)
    ├── PseudonymisationError       a rule could not be applied with processingErrors=raise
    ├── NativeBuildError            the compiled pseudonymisation modules could not be built
    └── DeadLetterError             a dead letter could not be listed or shown

The command line (`caremesh.cli.main`) prints a `CaremeshError` as one line and exits non-zero:
2 for a `ConfigurationError` (the user's mistake), 1 otherwise; never a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


class CaremeshError(Exception):
    """Base of every error raised by caremesh."""


class ConfigurationError(CaremeshError):
    """Settings, a rule file or a pathway definition is invalid."""


class KafkaUnavailableError(CaremeshError):
    """The broker could not be reached or did not acknowledge a write in time."""


class LocalKafkaError(CaremeshError):
    """The local single-node broker could not be fetched, formatted, started or stopped."""


class LocalHapiError(CaremeshError):
    """The local HAPI FHIR server (caremesh.local.hapi) could not be built, started or stopped."""


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


@dataclass(frozen=True, slots=True)
class FhirIssue:
    """One problem of a FHIR input: a code, the element's FHIRPath-like location, a value-free
    text. It becomes one `OperationOutcome.issue` (with `expression`)."""

    code: str
    expression: str
    detail: str


class InvalidFhirError(RejectedInputError):
    """The input is not valid FHIR JSON for a supported release; `issues` name the elements."""

    def __init__(self, code: str, detail: str, issues: tuple[FhirIssue, ...] = ()) -> None:
        super().__init__(code, detail)
        self.issues = issues


class InvalidHl7Error(RejectedInputError):
    """The input is not an HL7 v2 message that caremesh accepts."""


class ConsentNotReadyError(CaremeshError):
    """Consent state is still recovering; the decision must be retried, never defaulted."""


class PseudonymisationError(CaremeshError):
    """A pseudonymisation rule failed on a node (processingErrors=raise)."""


class ConsentRequestError(RejectedInputError):
    """A request the consent API refuses: `code`, value-free `detail`, HTTP `status`."""

    def __init__(self, code: str, detail: str, status: int) -> None:
        super().__init__(code, detail)
        self.status = status


class RefusedRequestError(CaremeshError):
    """An HTTP request answered with an OperationOutcome: `code`, value-free `detail`, `status`.

    `status` None lets the service map the code to its status (`connectors.http.outcome`);
    `headers` go on the answer (e.g. `WWW-Authenticate`, `Retry-After`); `issues` name the
    elements at fault (never their values).
    """

    def __init__(
        self,
        code: str,
        detail: str,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        issues: tuple[FhirIssue, ...] = (),
    ) -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail
        self.status = status
        self.headers: dict[str, str] = dict(headers or {})
        self.issues = issues


class AuthRefusedError(RefusedRequestError):
    """A request without a valid token (401) or without an admitted role (403)."""

    status: int

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(code, detail, status)


class NativeBuildError(CaremeshError):
    """The compiled modules could not be built (the pure Python ones keep working)."""


class DeadLetterError(CaremeshError):
    """A dead letter could not be listed or shown (the message carries coordinates only)."""
