"""The one root configuration of caremesh, read once by the CLI from `CAREMESH_...` variables.

Nesting uses `__` (`CAREMESH_KAFKA__BOOTSTRAP_SERVERS`). Secrets are `SecretStr` and come from the
environment or from files (`CAREMESH_SECRETS_DIR`, one file per variable name). Library code never
reads settings itself: the CLI builds one `Settings` and passes the parts down. Settings are
frozen: a component cannot change what another one reads (a changed copy is `model_copy`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

FhirRelease = Literal["R4", "R4B", "R5"]
"""The FHIR releases the platform reads and delivers: R4 4.0.1, R4B 4.3.0, R5 5.0.0."""

_PACKAGE = Path(__file__).resolve().parent


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


def _int(value: object) -> object:
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value


LocalNodes = Annotated[Literal[1, 3], BeforeValidator(_int)]
"""Nodes of the local Kafka: 1 (the single node) or 3 (a local cluster)."""
ConsentOutcome = Annotated[Literal["permit", "deny"], BeforeValidator(_lower)]
"""A consent default: `permit` or `deny` (any case); anything else is refused at start-up."""
LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR"],
    BeforeValidator(lambda v: v.strip().upper() if isinstance(v, str) else v),
]


def settings_problems(exc: ValidationError) -> str:
    """A settings error as one line: each field's location and message, never the value given."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


class _Section(BaseModel):
    """A settings section; attribute docstrings become field descriptions (docs/)."""

    model_config = ConfigDict(use_attribute_docstrings=True, frozen=True)


def _default_kafka_home() -> Path:
    """The broker's pom and config templates, shipped inside the package (an installed wheel
    has them too)."""
    return _PACKAGE / "kafka" / "broker"


def default_cache_dir() -> Path:
    """Downloaded jars and build output: `$XDG_CACHE_HOME/caremesh` (default ~/.cache/caremesh)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "caremesh"


def _default_state_dir() -> Path:
    """Pid files, data and logs of local processes: `$CAREMESH_STATE_DIR`, else `.caremesh` in
    the working directory (read here too, so the sections' defaults follow it)."""
    return Path(os.environ.get("CAREMESH_STATE_DIR") or Path.cwd() / ".caremesh")


class KafkaSettings(_Section):
    """Where the Kafka cluster is, and how the local single-node broker is run."""

    bootstrap_servers: str = "127.0.0.1:9092"
    """`CAREMESH_KAFKA__BOOTSTRAP_SERVERS`: comma-separated host:port list."""
    partitions: int = Field(default=6, ge=1, le=1000)
    """`CAREMESH_KAFKA__PARTITIONS`: partition count of every patient-keyed topic."""
    replication_factor: int | None = Field(default=None, ge=1)
    """`CAREMESH_KAFKA__REPLICATION_FACTOR`: replicas per topic; unset, it follows the number of
    brokers the cluster reports when a topic is created (1 on one broker, 3 from three brokers
    on, with `min.insync.replicas` 2; `caremesh.kafka.admin.topic_replication`)."""
    topic_prefix: str = ""
    """`CAREMESH_KAFKA__TOPIC_PREFIX`: prepended to every catalogue topic (tests, tenants)."""
    local_home: Path = Field(default_factory=_default_kafka_home)
    """`CAREMESH_KAFKA__LOCAL_HOME`: folder with the pom and configs of the local broker."""
    local_cache_dir: Path = Field(default_factory=lambda: default_cache_dir() / "kafka")
    """`CAREMESH_KAFKA__LOCAL_CACHE_DIR`: where Maven puts the local broker's jars, once."""
    local_data_dir: Path = Field(default_factory=lambda: _default_state_dir() / "kafka")
    """`CAREMESH_KAFKA__LOCAL_DATA_DIR`: log dirs, pid file and logs of the local broker."""
    local_port: int = Field(default=9092, ge=1, le=65535)
    """`CAREMESH_KAFKA__LOCAL_PORT`: client listener port of the local broker (127.0.0.1)."""
    local_controller_port: int = Field(default=9093, ge=1, le=65535)
    """`CAREMESH_KAFKA__LOCAL_CONTROLLER_PORT`: controller listener port of the local broker."""
    local_nodes: LocalNodes = 1
    """`CAREMESH_KAFKA__LOCAL_NODES`: 1 (the single node), or 3 for a local KRaft cluster of three
    combined broker+controller nodes: node i (0, 1, 2) listens on `local_port` + 2i, its
    controller on `local_port` + 2i + 1, and keeps its data in `local_data_dir`/node-<i>."""
    local_heap: str = "1g"
    """`CAREMESH_KAFKA__LOCAL_HEAP`: JVM heap of the local broker."""
    security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = "PLAINTEXT"
    """`CAREMESH_KAFKA__SECURITY_PROTOCOL`: how this process talks to the brokers."""
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    """`CAREMESH_KAFKA__SASL_MECHANISM`: SASL mechanism with a SASL_* protocol."""
    username: str | None = None
    """`CAREMESH_KAFKA__USERNAME`: this process's own Kafka principal (SASL user name)."""
    password: SecretStr | None = None
    """`CAREMESH_KAFKA__PASSWORD`: the principal's SASL password."""
    ssl_cafile: Path | None = None
    """`CAREMESH_KAFKA__SSL_CAFILE`: PEM file of the CAs that sign the brokers' certificates."""
    ssl_certfile: Path | None = None
    """`CAREMESH_KAFKA__SSL_CERTFILE`: PEM client certificate (mutual TLS), if the brokers ask."""
    ssl_keyfile: Path | None = None
    """`CAREMESH_KAFKA__SSL_KEYFILE`: PEM private key of `ssl_certfile`."""
    local_secured: bool = False
    """`CAREMESH_KAFKA__LOCAL_SECURED`: run the local broker with SASL/SCRAM and ACLs (deny by
    default); `username`/`password` are then the admin (a super user)."""
    local_broker_password: SecretStr | None = None
    """`CAREMESH_KAFKA__LOCAL_BROKER_PASSWORD`: password of the secured local broker's own
    principal; None: generated once and kept in the data dir."""
    local_scram_users: dict[str, SecretStr] = Field(default_factory=dict)
    """`CAREMESH_KAFKA__LOCAL_SCRAM_USERS`: JSON map user → password of further SCRAM users the
    secured local broker gets when its storage is formatted."""
    local_ssl_keystore: Path | None = None
    """`CAREMESH_KAFKA__LOCAL_SSL_KEYSTORE`: PKCS12 keystore of the secured local broker; when
    set its client listener is SASL_SSL instead of SASL_PLAINTEXT."""
    local_ssl_keystore_password: SecretStr | None = None
    """`CAREMESH_KAFKA__LOCAL_SSL_KEYSTORE_PASSWORD`: password of the keystore and truststore."""
    local_ssl_truststore: Path | None = None
    """`CAREMESH_KAFKA__LOCAL_SSL_TRUSTSTORE`: PKCS12 truststore with the CA of the keystore's
    certificate (the broker connects to itself over the client listener)."""


class SecuritySettings(_Section):
    """Kafka principals that are not components, organisations or studies (DESIGN §9)."""

    admin: str = "caremesh-admin"
    """`CAREMESH_SECURITY__ADMIN`: the only principal that alters ACLs, topics and the audit
    topic's configuration."""
    auditors: list[str] = Field(default_factory=lambda: ["caremesh-auditor"])
    """`CAREMESH_SECURITY__AUDITORS`: JSON list of principals that read `audit.v1`."""
    operators: list[str] = Field(default_factory=lambda: ["caremesh-operator"])
    """`CAREMESH_SECURITY__OPERATORS`: JSON list of principals that read the dead-letter and
    failed-delivery topics (they hold PHI)."""


DeliveryMode = Literal["rest", "transaction"]
"""The delivery modes of `connectors.fhir_delivery` (DESIGN §8)."""


class OrganisationSettings(_Section):
    """A care provider that can receive data (outbox topic, FHIR endpoint)."""

    id: str
    """Organisation id, used in `outbox.<id>.v1` and as `Organization/<id>`."""
    name: str = ""
    fhir_endpoint: str | None = None
    """Base URL of the organisation's FHIR server for delivery, if it takes REST delivery."""
    token: SecretStr | None = None
    """Bearer token for the organisation's FHIR endpoint."""
    subscriptions: list[str] = Field(default_factory=list)
    """Resource types the organisation subscribed to (empty: none)."""
    delivery_mode: DeliveryMode = "rest"
    """How `caremesh deliver` sends to `fhir_endpoint`: `rest` (an update per resource at its
    recipient id, a Patient before what references it) or `transaction` (a transaction Bundle
    per patient batch, conditional on identifiers, so the receiver's own patient is matched)."""
    fhir_release: FhirRelease = "R4"
    """FHIR release its endpoint takes (R4, R4B, R5): delivery converts to it
    (`CAREMESH_ORGANISATIONS`, each entry's `fhir_release`)."""

    @field_validator("id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "-_" for c in value):
            raise ValueError("organisation id must be letters, digits, '-' or '_'")
        return value


class StudySettings(_Section):
    """An analytics consumer with a purpose of use (research, public health, quality)."""

    id: str
    """Study id, used in `research.<id>.v1`."""
    purpose: str = "HRESCH"
    """v3 ActReason purpose of use of the study."""
    consent_default: ConsentOutcome = "deny"
    """`permit` (opt-out study) or `deny` (opt-in study) when the patient said nothing."""
    rules: str = "gdpr-research"
    """A shipped rule preset name or a path to an anonymizer rule file."""
    retention_days: int = 365

    @field_validator("id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "-_" for c in value):
            raise ValueError("study id must be letters, digits, '-' or '_'")
        return value


class SourceSettings(_Section):
    """A source system allowed to publish (a hospital's FHIR client or HL7 v2 interface)."""

    id: str
    """Source id: it scopes local patient ids (`<source>/Patient/<id>`) and message ids."""
    token: SecretStr | None = None
    """Static bearer token of the source for the HTTP ingest API."""
    fhir_release: str | None = None
    """FHIR release the source sends (R4, R4B, R5); None: detected per message."""

    @field_validator("id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "-_." for c in value):
            raise ValueError("source id must be letters, digits, '-', '_' or '.'")
        return value


class HttpIngestSettings(_Section):
    """The FHIR HTTP ingest API."""

    host: str = "127.0.0.1"
    """`CAREMESH_HTTP_INGEST__HOST`: bind address."""
    port: int = Field(default=8080, ge=1, le=65535)
    """`CAREMESH_HTTP_INGEST__PORT`: listen port."""
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    """`CAREMESH_HTTP_INGEST__MAX_BODY_BYTES`: larger bodies get 413."""


class MllpSettings(_Section):
    """The HL7 v2 MLLP listener."""

    host: str = "127.0.0.1"
    """`CAREMESH_MLLP__HOST`: bind address."""
    port: int = Field(default=2575, ge=1, le=65535)
    """`CAREMESH_MLLP__PORT`: listen port."""
    max_message_bytes: int = Field(default=1024 * 1024, ge=1024)
    """`CAREMESH_MLLP__MAX_MESSAGE_BYTES`: larger frames are refused with ACK AR."""
    idle_timeout_seconds: float = 300.0
    """`CAREMESH_MLLP__IDLE_TIMEOUT_SECONDS`: idle connections are closed after this."""
    source: str = "mllp"
    """`CAREMESH_MLLP__SOURCE`: default source id when MSH-4 (sending facility) is empty."""
    metrics_host: str = "127.0.0.1"
    """`CAREMESH_MLLP__METRICS_HOST`: bind address of the listener's /metrics and /health."""
    metrics_port: int = Field(default=8083, ge=1, le=65535)
    """`CAREMESH_MLLP__METRICS_PORT`: port of the listener's /metrics and /health (HTTP)."""


class WorkerSettings(_Section):
    """The stream worker."""

    app_id: str = "caremesh"
    """`CAREMESH_WORKER__APP_ID`: worker app id: the stages' consumer groups are
    `<app id>-<stage>` and their state topics `<topic prefix><app id>-<stage>-*`."""
    web_port: int = Field(default=6066, ge=1, le=65535)
    """`CAREMESH_WORKER__WEB_PORT`: port of the worker's web server (/metrics)."""
    web_host: str = "127.0.0.1"
    """`CAREMESH_WORKER__WEB_HOST`: bind address of the worker's web server."""
    dedup_window_hours: float = Field(default=24.0, gt=0)
    """`CAREMESH_WORKER__DEDUP_WINDOW_HOURS`: how long a message id is remembered, so that the
    same message sent again within this window adds nothing downstream."""
    data_dir: Path = Field(default_factory=lambda: _default_state_dir() / "worker")
    """`CAREMESH_WORKER__DATA_DIR`: scratch directory of the worker (its stages keep their
    state in Kafka, nothing here needs a backup)."""
    session_timeout_seconds: float = Field(default=10.0, ge=1.0, le=300.0)
    """`CAREMESH_WORKER__SESSION_TIMEOUT_SECONDS`: consumer group session timeout of every stage
    consumer; the heartbeat interval is a third of it. A worker that
    dies without leaving its group (SIGKILL, power loss) keeps its partitions this long before
    another worker takes them over. 10 s (Kafka's default is 45 s) fails over quickly while
    tolerating a few missed heartbeats; the broker refuses values outside its
    `group.min.session.timeout.ms` (6 s) and `group.max.session.timeout.ms` (30 min)."""
    switch_interval_ms: float = Field(default=50.0, ge=1.0, le=1000.0)
    """`CAREMESH_WORKER__SWITCH_INTERVAL_MS`: how long a stage thread may keep the interpreter
    while others wait for it (Python's thread switch interval; the interpreter's default is
    5 ms). The stages share one interpreter lock: a longer slice means fewer forced handovers
    between stages that are all busy (each handover costs the next thread cold caches), and a
    stage that blocks on Kafka hands over at once anyway. 50 ms gave one worker +19 % throughput
    in alternated end-to-end runs (docs/bench/README.md); lower it if a stage's latency matters
    more than throughput."""
    fault_marker: str | None = None
    """`CAREMESH_WORKER__FAULT_MARKER`: tests only, off by default. When set, a record whose
    bytes contain this marker makes the patient-keyed stages (share, pathways, research) raise, so
    fault tests can prove that a raising stage dead-letters the record and moves on."""


def _care_opt_out_defaults() -> dict[str, Literal["permit", "deny"]]:
    return {"TREAT": "permit", "HRESCH": "deny", "PUBHLTH": "deny", "HOPERAT": "deny"}


class ConsentSettings(_Section):
    """Consent policy: what applies when a patient said nothing, and what needs a permit."""

    defaults: dict[str, ConsentOutcome] = Field(default_factory=_care_opt_out_defaults)
    """`CAREMESH_CONSENT__DEFAULTS`: JSON map purpose → permit|deny (care is opt-out, GDPR Art.
    9(2)(h); research is opt-in unless a study says otherwise)."""
    fallback: ConsentOutcome = "deny"
    """`CAREMESH_CONSENT__FALLBACK`: the outcome for a purpose without a default."""
    restricted_labels: list[str] = Field(default_factory=lambda: ["R", "V"])
    """`CAREMESH_CONSENT__RESTRICTED_LABELS`: confidentiality codes needing an explicit permit."""
    sensitive_labels: list[str] = Field(default_factory=lambda: ["ETH", "PSY", "HIV", "SDV"])
    """`CAREMESH_CONSENT__SENSITIVE_LABELS`: sensitivity codes needing an explicit permit."""


class PathwaySettings(_Section):
    """Care pathways run by the pathways stage."""

    directory: Path | None = None
    """`CAREMESH_PATHWAYS__DIRECTORY`: folder of pathway YAML files; None: the shipped examples."""
    coordinators: dict[str, str] = Field(default_factory=dict)
    """`CAREMESH_PATHWAYS__COORDINATORS`: JSON map pathway id → `Organization/<id>` override."""
    tick_interval_seconds: float = Field(default=60.0, gt=0)
    """`CAREMESH_PATHWAYS__TICK_INTERVAL_SECONDS`: how often deadlines are checked."""


class PseudonymSettings(_Section):
    """Keys of the research streams; they never leave the platform's research stage."""

    master_key: SecretStr | None = None
    """`CAREMESH_PSEUDONYM__MASTER_KEY`: the master key (hex or text, >= 32 bytes); per-study
    keys are derived from it with HKDF. Required when studies are configured."""
    key_id: str = "k1"
    """`CAREMESH_PSEUDONYM__KEY_ID`: the id of the current master key version."""


class CoordinatorSettings(_Section):
    """A care coordinator who may sign in to the inbox; sees only their organisation's alerts."""

    username: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._@-]+$")
    """Sign-in name; also the `coordinator` of the actions they take."""
    password_hash: SecretStr
    """`scrypt$...` from `caremesh inbox hash-password` (never the password itself)."""
    organisation: str
    """Organisation id (`Organization/<id>` is the alerts' recipient)."""
    display_name: str = ""
    """Name shown on the page."""

    @field_validator("organisation")
    @classmethod
    def _safe_org(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "-_." for c in value):
            raise ValueError("organisation id must be letters, digits, '-', '_' or '.'")
        return value


class InboxSettings(_Section):
    """The care coordinators' web inbox."""

    host: str = "127.0.0.1"
    """`CAREMESH_INBOX__HOST`: bind address."""
    port: int = Field(default=8090, ge=1, le=65535)
    """`CAREMESH_INBOX__PORT`: listen port."""
    session_secret: SecretStr | None = None
    """`CAREMESH_INBOX__SESSION_SECRET`: HMAC key of session cookies and CSRF tokens (>= 32
    characters); required to run the inbox."""
    session_hours: float = Field(default=8.0, gt=0, le=24 * 7)
    """`CAREMESH_INBOX__SESSION_HOURS`: how long a sign-in lasts."""
    secure_cookies: bool = False
    """`CAREMESH_INBOX__SECURE_COOKIES`: mark cookies `Secure` (set it when served over TLS)."""
    keepalive_seconds: float = Field(default=15.0, gt=0)
    """`CAREMESH_INBOX__KEEPALIVE_SECONDS`: interval of keep-alive comments on the event stream."""
    coordinators: list[CoordinatorSettings] = Field(default_factory=list)
    """`CAREMESH_INBOX__COORDINATORS`: JSON list of
    `{username, password_hash, organisation, display_name}`."""


class ConsentApiSettings(_Section):
    """The consent API (create, update, withdraw, list, decide)."""

    host: str = "127.0.0.1"
    """`CAREMESH_CONSENT_API__HOST`: bind address."""
    port: int = Field(default=8081, ge=1, le=65535)
    """`CAREMESH_CONSENT_API__PORT`: listen port."""
    admins: dict[str, SecretStr] = Field(default_factory=dict)
    """`CAREMESH_CONSENT_API__ADMINS`: JSON map administrator name → bearer token; the name is
    recorded in the AuditEvents of the changes they make. Empty: every request gets 401."""
    reidentifiers: dict[str, SecretStr] = Field(default_factory=dict)
    """`CAREMESH_CONSENT_API__REIDENTIFIERS`: JSON map name → bearer token of the people who may
    re-identify a study pseudonym (`POST /ResearchStudy/{study}/$reidentify`, audited); a role of
    its own, consent administrators cannot. Empty: nobody can."""
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    """`CAREMESH_CONSENT_API__MAX_BODY_BYTES`: larger Consent bodies get 413."""


class DeliverySettings(_Section):
    """FHIR REST delivery of each organisation's outbox to its endpoint."""

    max_attempts: int = Field(default=8, ge=1)
    """`CAREMESH_DELIVERY__MAX_ATTEMPTS`: tries before a record goes to delivery.failed.v1."""
    backoff_base_seconds: float = Field(default=0.5, gt=0)
    """`CAREMESH_DELIVERY__BACKOFF_BASE_SECONDS`: first retry delay (doubles, with jitter)."""
    backoff_max_seconds: float = Field(default=30.0, gt=0)
    """`CAREMESH_DELIVERY__BACKOFF_MAX_SECONDS`: cap of one retry delay."""
    timeout_seconds: float = Field(default=10.0, gt=0)
    """`CAREMESH_DELIVERY__TIMEOUT_SECONDS`: timeout of one HTTP request to an endpoint."""
    backfill_days: int = Field(default=0, ge=0, le=3650)
    """`CAREMESH_DELIVERY__BACKFILL_DAYS`: an organisation that joins a patient's care team
    receives, after the patient's Patient, the subscribed resources about the last N days (by
    clinical date, else arrival) that were shared for the patient; 0: the Patient only (the
    share stage then keeps no copy of recent resources)."""
    dedup_cache_size: int = Field(default=100_000, ge=0)
    """`CAREMESH_DELIVERY__DEDUP_CACHE_SIZE`: delivered ce_ids remembered per organisation."""
    host: str = "127.0.0.1"
    """`CAREMESH_DELIVERY__HOST`: bind address of /metrics and /health."""
    port: int = Field(default=8082, ge=1, le=65535)
    """`CAREMESH_DELIVERY__PORT`: port of /metrics and /health."""


class OidcSettings(_Section):
    """OAuth2/OIDC bearer tokens (JWT) accepted by the HTTP APIs beside their static tokens."""

    issuer: str | None = None
    """`CAREMESH_OIDC__ISSUER`: the `iss` every token must carry; None: JWTs are not accepted."""
    audience: str | None = None
    """`CAREMESH_OIDC__AUDIENCE`: the `aud` every token must carry (required with an issuer)."""
    jwks_file: Path | None = None
    """`CAREMESH_OIDC__JWKS_FILE`: the issuer's JSON Web Key Set (RFC 7517), read at start."""
    public_key_files: list[Path] = Field(default_factory=list)
    """`CAREMESH_OIDC__PUBLIC_KEY_FILES`: JSON list of PEM public keys (RSA or EC P-256)."""
    algorithms: list[Literal["RS256", "ES256"]] = Field(
        default_factory=lambda: ["RS256", "ES256"]  # type: ignore[arg-type]
    )
    """`CAREMESH_OIDC__ALGORITHMS`: JSON list of accepted signature algorithms."""
    roles_claim: str = "roles"
    """`CAREMESH_OIDC__ROLES_CLAIM`: the claim (a list or a space-separated string) holding the
    caller's roles: source-system, coordinator, consent-admin, auditor, researcher."""
    source_claim: str = "source"
    """`CAREMESH_OIDC__SOURCE_CLAIM`: the claim naming a source system's configured source id."""
    organisation_claim: str = "organisation"
    """`CAREMESH_OIDC__ORGANISATION_CLAIM`: the claim naming a coordinator's organisation id."""
    leeway_seconds: float = Field(default=30.0, ge=0, le=300)
    """`CAREMESH_OIDC__LEEWAY_SECONDS`: clock skew allowed on `exp`, `nbf` and `iat`."""


class Settings(BaseSettings):
    """The root configuration: `Settings()` reads the environment once."""

    model_config = SettingsConfigDict(
        env_prefix="CAREMESH_",
        env_nested_delimiter="__",
        extra="ignore",
        use_attribute_docstrings=True,
        secrets_nested_delimiter="__",
        frozen=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Constructor values, then the environment, then secret files (nested with `__`)."""
        secrets = NestedSecretsSettingsSource(file_secret_settings)
        return init_settings, env_settings, dotenv_settings, secrets

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    sources: list[SourceSettings] = Field(default_factory=list)
    """`CAREMESH_SOURCES`: JSON list of source systems with their tokens."""
    http_ingest: HttpIngestSettings = Field(default_factory=HttpIngestSettings)
    mllp: MllpSettings = Field(default_factory=MllpSettings)
    consent: ConsentSettings = Field(default_factory=ConsentSettings)
    consent_api: ConsentApiSettings = Field(default_factory=ConsentApiSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    pathways: PathwaySettings = Field(default_factory=PathwaySettings)
    inbox: InboxSettings = Field(default_factory=InboxSettings)
    pseudonym: PseudonymSettings = Field(default_factory=PseudonymSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    oidc: OidcSettings = Field(default_factory=OidcSettings)
    organisations: list[OrganisationSettings] = Field(default_factory=list)
    """`CAREMESH_ORGANISATIONS`: JSON list of organisations."""
    studies: list[StudySettings] = Field(default_factory=list)
    """`CAREMESH_STUDIES`: JSON list of studies."""
    log_level: LogLevel = "INFO"
    """`CAREMESH_LOG_LEVEL`: DEBUG, INFO, WARNING or ERROR."""
    state_dir: Path = Field(default_factory=_default_state_dir)
    """`CAREMESH_STATE_DIR`: where local processes keep pid files and logs."""
