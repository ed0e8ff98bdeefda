"""The one place that turns Settings into Kafka client options: address, TLS and SASL.

Every Kafka client Switchboard makes (the ingress producer, the readers of the ops
commands and of the worker's un-parking, the admin client of ``switchboard topics``,
``reconcile --fix``, ``doctor``) is built with ``**kafka_options(settings)``, and the Faust
app gets the same security through :func:`faust_credentials`. So a managed cluster
(Confluent Cloud: SASL_SSL + PLAIN; Aiven, Redpanda Cloud, MSK: SASL_SSL + SCRAM or mutual
TLS) is configured once, in the SWITCHBOARD_KAFKA_* variables, and no client can miss it
(docs/deploy.md, "Managed Kafka").
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context

from pipeline.errors import KafkaUnavailable
from pipeline.settings import Settings

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL / SASL_SSL (None for the plaintext protocols).

    Without SWITCHBOARD_KAFKA_SSL_CAFILE the system's CA store verifies the brokers, which
    is right for the public CAs of managed services; the hostname is always checked.
    """
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    context: ssl.SSLContext = create_ssl_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
        certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
        keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
    )
    return context


def kafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaProducer / AIOKafkaConsumer / AIOKafkaAdminClient."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=password.reveal() if password is not None else None,
        )
    return options


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """The same security for the Faust app (its ``broker_credentials``); None = plaintext."""
    from faust.auth import SASLCredentials, SSLCredentials

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = ssl_context(settings)
    if protocol == "SSL":
        return SSLCredentials(context)
    password = settings.kafka_sasl_password
    return SASLCredentials(
        username=settings.kafka_sasl_username,
        password=password.reveal() if password is not None else None,
        ssl_context=context,  # None for SASL_PLAINTEXT: Faust then says SASL_PLAINTEXT
        mechanism=settings.kafka_sasl_mechanism,
    )


def describe(settings: Settings) -> str:
    """Where and how we connect, for error messages and logs (never the password)."""
    how = settings.kafka_security_protocol
    if settings.kafka_sasl_mechanism and how.startswith("SASL_"):
        how += f"/{settings.kafka_sasl_mechanism} as {settings.kafka_sasl_username}"
    return f"{settings.kafka_bootstrap} ({how})"


Send = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]
"""One record to send: topic (already prefixed), key, value, headers."""


class DurableProducer:
    """An idempotent ``acks=all`` producer for the commands that write to Kafka.

    ``async with`` starts it (:class:`~pipeline.errors.KafkaUnavailable` when Kafka cannot
    be reached) and stops it; :meth:`send_all` returns only once every record is
    acknowledged, so a command that returns has made all it sent durable. Its requests may
    carry a whole webhook body (``SWITCHBOARD_MAX_BODY_BYTES``) plus headers.
    """

    def __init__(self, settings: Settings, *, client_id: str) -> None:
        self.settings = settings
        self._producer = AIOKafkaProducer(
            **kafka_options(settings),
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            request_timeout_ms=15_000,
            max_request_size=settings.max_body_bytes + 64 * 1024,
        )

    async def __aenter__(self) -> Self:
        try:
            await self._producer.start()
        except KafkaError as exc:
            await self._producer.stop()
            raise KafkaUnavailable(
                f"Kafka unreachable at {describe(self.settings)}: {exc.__class__.__name__}"
            ) from exc
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._producer.stop()

    async def send_all(self, records: Iterable[Send]) -> None:
        """Send every record and wait for all acknowledgements (raises KafkaError)."""
        futures = [
            await self._producer.send(topic, key=key, value=value, headers=headers)
            for topic, key, value, headers in records
        ]
        await asyncio.gather(*futures)
