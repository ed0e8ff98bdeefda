"""Settings: one frozen, typed object, built from the environment by one function.

Nothing here reads the environment at import time. ``load_settings`` validates every
variable and raises a single :class:`ConfigError` that lists every problem, so an operator
fixes a bad deployment in one go. Secrets are wrapped in :class:`Secret` so that ``repr``,
logs and tracebacks show ``***``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

from pipeline.errors import ConfigError
from pipeline.providers import PROVIDERS

COMPRESSION_CODECS = ("none", "gzip", "lz4", "zstd", "snappy")
DEFAULT_DATABASE_URL = "mysql+pymysql://switchboard:switchboard@127.0.0.1:3306/switchboard"
DEFAULT_RETELL_API_URL = "https://api.retellai.com"
DEFAULT_CALCOM_API_URL = "https://api.cal.com"
#: The ``cal-api-version`` of ``GET /v2/bookings`` whose parameters the backfill relies on
#: (docs/providers.md, "REST APIs for backfill").
DEFAULT_CALCOM_API_VERSION = "2024-08-13"


class Secret:
    """A string that never shows itself in ``repr``/``str``. Use ``reveal()`` deliberately."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


DEFAULT_TOPIC_RETENTION_DAYS = 30
# Day buckets are kept 400 days and reconcile recounts them from the rows that webhook_events
# marks applied, so its rows must live longer than that.
DEFAULT_EVENTS_RETENTION_DAYS = 430


@dataclass(frozen=True, slots=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:9092"
    database_url: Secret = field(default_factory=lambda: Secret(DEFAULT_DATABASE_URL))
    retell_api_keys: tuple[Secret, ...] = ()
    calcom_webhook_secrets: tuple[Secret, ...] = ()
    ingress_host: str = "127.0.0.1"
    ingress_port: int = 8080
    worker_host: str = "127.0.0.1"
    worker_port: int = 6066
    analyst_tokens: tuple[Secret, ...] = ()
    data_dir: Path = Path("./var")
    # Beyond the README's configuration table: tuning knobs with safe defaults (documented in the README).
    topic_partitions: int = 12
    topic_replication: int = 1
    max_body_bytes: int = 1024 * 1024
    ack_budget_s: float = 2.0
    retry_after_s: int = 5
    routing_refresh_s: float = 30.0
    caller_lookup_budget_s: float = 0.05
    worker_batch_size: int = 1000
    worker_batch_within_s: float = 0.2
    # Batches per apply agent in flight at once (docs/architecture.md, "Apply agents").
    worker_batches_in_flight: int = 8
    # 1: the engine runs in a child process of each worker (pipeline/apply/process.py).
    worker_apply_process: int = 1
    topic_prefix: str = ""
    consumer_group: str = "switchboard"
    worker_store: str = "rocksdb://"
    # The ingress's spool (docs/ingress.md "Spool") and its defences against slow clients.
    spool_dir: Path | None = None  # default: <data_dir>/ingress-spool
    spool_max_bytes: int = 1024 * 1024 * 1024
    spool_max_age_s: float = 86_400.0
    ingress_max_in_flight: int = 512
    ingress_max_connections: int = 8192
    ingress_idle_timeout_s: float = 15.0
    ingress_body_timeout_s: float = 10.0
    # The ingress's producer (measured in docs/benchmarks.md; docs/ingress.md "Producer").
    kafka_linger_ms: int = 2
    kafka_max_batch_bytes: int = 512 * 1024
    kafka_compression: str = "none"
    # Provider REST APIs, read by `switchboard backfill` only (docs/backfill.md).
    retell_api_url: str = DEFAULT_RETELL_API_URL
    calcom_api_url: str = DEFAULT_CALCOM_API_URL
    calcom_api_key: Secret | None = None
    calcom_api_version: str = DEFAULT_CALCOM_API_VERSION
    # Retention (docs/runbook.md "Retention"): raw bodies on the webhook topics and the DLQ,
    # and webhook_events rows, which must outlive every record that could bring them back.
    topic_retention_days: int = DEFAULT_TOPIC_RETENTION_DAYS
    events_retention_days: int = DEFAULT_EVENTS_RETENTION_DAYS

    def retell_api_key(self) -> Secret | None:
        """Retell's REST key: the first of ``RETELL_API_KEY`` (the list exists for rotation)."""
        return self.retell_api_keys[0] if self.retell_api_keys else None

    # Kafka security (docs/deploy.md, "Managed Kafka"): one group, read by the one client
    # builder (pipeline/kafka.py) that every Kafka client and the Faust app use.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: Secret | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    # The URL other workers use to reach this one (analyst API routing); the bind address
    # (worker_host) may be 0.0.0.0, the advertised URL never (docs/deploy.md, "Workers").
    worker_advertised_url: str | None = None
    # Companies per worker with their own label on switchboard_worker_company_events_total
    # (the rest count as "other"): bounds the series (docs/observability.md).
    metrics_company_limit: int = 50

    def secrets_for(self, provider: str) -> tuple[str, ...]:
        """Plain secret strings for a provider's verifier (empty → the provider is refused)."""
        known = PROVIDERS.get(provider)
        chosen: tuple[Secret, ...] = getattr(self, known.SECRETS_SETTING) if known else ()
        return tuple(s.reveal() for s in chosen)

    def topic(self, name: str) -> str:
        """The full Kafka topic name; a prefix lets tests isolate themselves on one broker."""
        return f"{self.topic_prefix}{name}"

    def ingress_spool_dir(self) -> Path:
        """Where the ingress processes keep their spools (one file set per process)."""
        return self.spool_dir if self.spool_dir is not None else self.data_dir / "ingress-spool"

    def worker_url(self) -> str:
        """The URL this worker advertises to the others: explicit, or the bind address."""
        return self.worker_advertised_url or f"http://{self.worker_host}:{self.worker_port}"

    def with_(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _secrets(raw: str | None) -> tuple[Secret, ...]:
    if not raw:
        return ()
    return tuple(Secret(part.strip()) for part in raw.split(",") if part.strip())


def _bootstrap_problem(raw: str) -> str | None:
    """Why ``raw`` is not a comma list of ``host[:port]`` (IPv6 as ``[addr]:port``), or None.

    aiokafka parses the list only when it connects, and a bad port there is a bare
    ``ValueError`` traceback; catching it here turns it into one config line.
    """
    for entry in (part.strip() for part in raw.split(",")):
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else None
            if rest and port is None:
                return f"has a malformed address {entry!r}"
        elif entry.count(":") == 1:
            host, _, port = entry.partition(":")
        else:  # a bare host, or a bare IPv6 address: aiokafka uses port 9092
            host, port = entry, None
        if not host:
            return f"has an entry without a host: {entry!r}"
        if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
            return f"has a bad port in {entry!r} (want 1-65535)"
    return None


def _base_url_problem(raw: str) -> str | None:
    """Why ``raw`` is not an ``http(s)://host[:port][/path]`` base URL, or None.

    Never quotes the value: an operator may have pasted a key into the wrong variable.
    """
    parsed = urlsplit(raw)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return "must be an http:// or https:// URL"
    if parsed.query or parsed.fragment or parsed.username or parsed.password:
        return "must be a plain base URL (no credentials, query or fragment)"
    return None


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
#: Hosts that a server can bind to but nobody can connect to.
UNROUTABLE_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]", "*"})


def _kafka_security(environ: Mapping[str, str], problems: list[str]) -> dict[str, object]:
    """The SWITCHBOARD_KAFKA_SECURITY_PROTOCOL group: consistent, files readable."""
    values: dict[str, object] = {}
    raw = (environ.get("SWITCHBOARD_KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT").strip().upper()
    if raw not in SECURITY_PROTOCOLS:
        problems.append(
            f"SWITCHBOARD_KAFKA_SECURITY_PROTOCOL must be one of {', '.join(SECURITY_PROTOCOLS)}"
        )
        return values
    values["kafka_security_protocol"] = raw
    sasl, tls = raw.startswith("SASL_"), raw.endswith("SSL")
    mechanism = (environ.get("SWITCHBOARD_KAFKA_SASL_MECHANISM") or "").strip().upper()
    username = (environ.get("SWITCHBOARD_KAFKA_SASL_USERNAME") or "").strip()
    password = environ.get("SWITCHBOARD_KAFKA_SASL_PASSWORD") or ""
    if sasl:
        if mechanism not in SASL_MECHANISMS:
            problems.append(
                f"SWITCHBOARD_KAFKA_SASL_MECHANISM must be one of {', '.join(SASL_MECHANISMS)} "
                f"with {raw}"
            )
        if not username:
            problems.append(f"SWITCHBOARD_KAFKA_SASL_USERNAME is required with {raw}")
        if not password:
            problems.append(f"SWITCHBOARD_KAFKA_SASL_PASSWORD is required with {raw}")
        values.update(
            kafka_sasl_mechanism=mechanism or None,
            kafka_sasl_username=username or None,
            kafka_sasl_password=Secret(password) if password else None,
        )
    elif mechanism or username or password:
        # Credentials with a protocol that does not send them: a half-done configuration.
        problems.append(
            f"SWITCHBOARD_KAFKA_SASL_* are set but SWITCHBOARD_KAFKA_SECURITY_PROTOCOL is {raw}"
        )
    files = {}
    for part in ("CAFILE", "CERTFILE", "KEYFILE"):
        var = f"SWITCHBOARD_KAFKA_SSL_{part}"
        path = (environ.get(var) or "").strip()
        if not path:
            continue
        if not tls:
            problems.append(f"{var} is set but SWITCHBOARD_KAFKA_SECURITY_PROTOCOL is {raw}")
        elif not Path(path).is_file():
            problems.append(f"{var} names no readable file: {path}")
        else:
            files[f"kafka_ssl_{part.lower()}"] = Path(path)
    if tls and ("kafka_ssl_certfile" in files) != ("kafka_ssl_keyfile" in files):
        problems.append("SWITCHBOARD_KAFKA_SSL_CERTFILE and _KEYFILE go together (mutual TLS)")
    values.update(files)
    return values


def _advertised_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be the URL other workers use to reach this one, or None."""
    parsed = urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        return "must be an http:// or https:// URL with a host, e.g. http://worker-0.workers:6066"
    try:
        parsed.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "has a bad port"
    if (parsed.hostname or "") in UNROUTABLE_HOSTS:
        return f"names {parsed.hostname or 'no host'}, which other workers cannot connect to"
    return None


# noqa below: several engineers are extending this function; split it once they have landed.
class _Reader:
    """Reads variables into Settings fields, collecting every problem instead of stopping."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []
        self.values: dict[str, object] = {}

    def raw(self, var: str) -> str | None:
        return self.environ.get(var)

    def text(self, var: str, attr: str) -> None:
        raw = self.environ.get(var)
        if raw is not None:
            if not raw.strip():
                self.problems.append(f"{var} is empty")
            else:
                self.values[attr] = raw.strip()

    def path(self, var: str, attr: str) -> None:
        raw = self.environ.get(var)
        if raw is not None:
            if raw.strip():
                self.values[attr] = Path(raw.strip())
            else:
                self.problems.append(f"{var} is empty")

    def integer(self, var: str, attr: str, low: int, high: int) -> None:
        self._ranged(var, attr, int, "an integer", low, high)

    def number(self, var: str, attr: str, low: float, high: float) -> None:
        self._ranged(var, attr, float, "a number", low, high)

    def _ranged(
        self, var: str, attr: str, kind: type[float], what: str, low: float, high: float
    ) -> None:
        raw = self.environ.get(var)
        if raw is None:
            return
        try:
            value = kind(raw)
        except ValueError:
            self.problems.append(f"{var} must be {what}, got {raw!r}")
            return
        if not low <= value <= high:
            self.problems.append(f"{var} must be between {low} and {high}, got {value}")
            return
        self.values[attr] = value


def _database_url(r: _Reader) -> None:
    raw_url = r.raw("SWITCHBOARD_DATABASE_URL")
    password = r.raw("SWITCHBOARD_DATABASE_PASSWORD")
    if password is not None:
        # A password from a secret store, kept out of the URL: no percent-encoding needed.
        try:
            base = make_url(raw_url or DEFAULT_DATABASE_URL)
        except Exception:  # noqa: BLE001 - reported below, once, by the URL check
            pass
        else:
            raw_url = base.set(password=password).render_as_string(hide_password=False)
    if raw_url is None:
        return
    try:
        url = make_url(raw_url)
    except Exception:  # noqa: BLE001 - any parse failure is one config problem
        r.problems.append("SWITCHBOARD_DATABASE_URL is not a valid SQLAlchemy URL")
        return
    # Never quote the URL itself in a problem: it carries the password.
    if not url.drivername.startswith(("mysql", "mariadb")):
        r.problems.append("SWITCHBOARD_DATABASE_URL must be a mysql+pymysql:// URL")
    elif url.port is not None and not 1 <= url.port <= 65535:
        r.problems.append("SWITCHBOARD_DATABASE_URL has a port outside 1-65535")
    else:
        r.values["database_url"] = Secret(raw_url)


def _kafka(r: _Reader) -> None:
    r.text("SWITCHBOARD_KAFKA_BOOTSTRAP", "kafka_bootstrap")
    bootstrap = r.values.get("kafka_bootstrap")
    if isinstance(bootstrap, str) and (problem := _bootstrap_problem(bootstrap)):
        del r.values["kafka_bootstrap"]
        r.problems.append(f"SWITCHBOARD_KAFKA_BOOTSTRAP {problem}")
    r.integer("SWITCHBOARD_KAFKA_LINGER_MS", "kafka_linger_ms", 0, 1000)
    r.integer(
        "SWITCHBOARD_KAFKA_MAX_BATCH_BYTES", "kafka_max_batch_bytes", 16 * 1024, 16 * 1024 * 1024
    )
    raw_codec = r.raw("SWITCHBOARD_KAFKA_COMPRESSION")
    if raw_codec is not None:
        if raw_codec.strip().lower() in COMPRESSION_CODECS:
            r.values["kafka_compression"] = raw_codec.strip().lower()
        else:
            r.problems.append(
                f"SWITCHBOARD_KAFKA_COMPRESSION must be one of {', '.join(COMPRESSION_CODECS)}"
            )
    r.values.update(_kafka_security(r.environ, r.problems))


def _ingress(r: _Reader) -> None:
    r.text("SWITCHBOARD_INGRESS_HOST", "ingress_host")
    r.integer("SWITCHBOARD_INGRESS_PORT", "ingress_port", 1, 65535)
    r.integer("SWITCHBOARD_MAX_BODY_BYTES", "max_body_bytes", 1024, 64 * 1024 * 1024)
    r.number("SWITCHBOARD_ACK_BUDGET_S", "ack_budget_s", 0.05, 60.0)
    r.integer("SWITCHBOARD_RETRY_AFTER_S", "retry_after_s", 1, 3600)
    r.number("SWITCHBOARD_ROUTING_REFRESH_S", "routing_refresh_s", 0.1, 3600.0)
    r.number("SWITCHBOARD_CALLER_LOOKUP_BUDGET_S", "caller_lookup_budget_s", 0.001, 5.0)
    r.path("SWITCHBOARD_SPOOL_DIR", "spool_dir")
    r.integer("SWITCHBOARD_SPOOL_MAX_BYTES", "spool_max_bytes", 1024 * 1024, 1 << 50)
    r.number("SWITCHBOARD_SPOOL_MAX_AGE_S", "spool_max_age_s", 1.0, 365 * 86_400.0)
    r.integer("SWITCHBOARD_INGRESS_MAX_IN_FLIGHT", "ingress_max_in_flight", 1, 100_000)
    r.integer("SWITCHBOARD_INGRESS_MAX_CONNECTIONS", "ingress_max_connections", 16, 1_000_000)
    r.number("SWITCHBOARD_INGRESS_IDLE_TIMEOUT_S", "ingress_idle_timeout_s", 1.0, 3600.0)
    r.number("SWITCHBOARD_INGRESS_BODY_TIMEOUT_S", "ingress_body_timeout_s", 0.5, 600.0)


def _worker(r: _Reader) -> None:
    r.text("SWITCHBOARD_WORKER_HOST", "worker_host")
    r.integer("SWITCHBOARD_WORKER_PORT", "worker_port", 1, 65535)
    r.path("SWITCHBOARD_DATA_DIR", "data_dir")
    r.integer("SWITCHBOARD_WORKER_BATCH_SIZE", "worker_batch_size", 1, 10_000)
    r.number("SWITCHBOARD_WORKER_BATCH_WITHIN_S", "worker_batch_within_s", 0.001, 10.0)
    r.integer("SWITCHBOARD_WORKER_BATCHES_IN_FLIGHT", "worker_batches_in_flight", 1, 8)
    r.integer("SWITCHBOARD_WORKER_APPLY_PROCESS", "worker_apply_process", 0, 1)
    r.text("SWITCHBOARD_CONSUMER_GROUP", "consumer_group")
    r.text("SWITCHBOARD_WORKER_STORE", "worker_store")
    r.integer("SWITCHBOARD_METRICS_COMPANY_LIMIT", "metrics_company_limit", 0, 10_000)
    raw_advertised = r.raw("SWITCHBOARD_WORKER_ADVERTISED_URL")
    if raw_advertised is not None:
        advertised = raw_advertised.strip().rstrip("/")
        if problem := _advertised_url_problem(advertised):
            r.problems.append(f"SWITCHBOARD_WORKER_ADVERTISED_URL {problem}")
        else:
            r.values["worker_advertised_url"] = advertised


def _topics(r: _Reader) -> None:
    r.integer("SWITCHBOARD_TOPIC_PARTITIONS", "topic_partitions", 1, 1000)
    r.integer("SWITCHBOARD_TOPIC_REPLICATION", "topic_replication", 1, 10)
    raw_prefix = r.raw("SWITCHBOARD_TOPIC_PREFIX")
    if raw_prefix:
        r.values["topic_prefix"] = raw_prefix.strip()
    r.integer("SWITCHBOARD_TOPIC_RETENTION_DAYS", "topic_retention_days", 1, 3650)
    r.integer("SWITCHBOARD_EVENTS_RETENTION_DAYS", "events_retention_days", 401, 36_500)
    topic_days = r.values.get("topic_retention_days", DEFAULT_TOPIC_RETENTION_DAYS)
    event_days = r.values.get("events_retention_days", DEFAULT_EVENTS_RETENTION_DAYS)
    if isinstance(topic_days, int) and isinstance(event_days, int) and event_days < topic_days + 15:
        r.problems.append(
            "SWITCHBOARD_EVENTS_RETENTION_DAYS must be at least SWITCHBOARD_TOPIC_RETENTION_DAYS"
            " + 15 (a webhook_events row must outlive every record that could re-apply it)"
        )


def _provider_apis(r: _Reader) -> None:
    for var, attr in (("RETELL_API_URL", "retell_api_url"), ("CALCOM_API_URL", "calcom_api_url")):
        raw = r.raw(var)
        if raw is not None:
            if problem := _base_url_problem(raw.strip()):
                r.problems.append(f"{var} {problem}")
            else:
                r.values[attr] = raw.strip().rstrip("/")
    raw_key = r.raw("CALCOM_API_KEY")
    if raw_key is not None and raw_key.strip():
        r.values["calcom_api_key"] = Secret(raw_key.strip())
    raw_version = r.raw("CALCOM_API_VERSION")
    if raw_version is not None:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw_version.strip()):
            r.values["calcom_api_version"] = raw_version.strip()
        else:
            r.problems.append(f"CALCOM_API_VERSION must look like 2024-08-13, got {raw_version!r}")


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build :class:`Settings` from ``environ``; raise one ConfigError naming every bad variable."""
    r = _Reader(environ)
    _kafka(r)
    _database_url(r)
    for provider in PROVIDERS.values():
        r.values[provider.SECRETS_SETTING] = _secrets(environ.get(provider.SECRETS_ENV))
    r.values["analyst_tokens"] = _secrets(environ.get("SWITCHBOARD_ANALYST_TOKENS"))
    _ingress(r)
    _worker(r)
    _topics(r)
    _provider_apis(r)
    if r.problems:
        raise ConfigError(r.problems)
    return Settings(**r.values)  # type: ignore[arg-type]
