"""Kafka TLS/SASL: one settings group, one builder, used by every client and by Faust."""

from __future__ import annotations

import ast
import ssl
from pathlib import Path

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from pipeline.errors import ConfigError
from pipeline.kafka import describe, faust_credentials, kafka_options
from pipeline.settings import Settings, load_settings
from testbed.certs import Authority

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "scram-pw-4d1f0a77"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority(tmp_path_factory.mktemp("certs"))


def problems_of(environ: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    return caught.value.problems


def sasl_ssl(ca: Authority, **extra: str) -> dict[str, str]:
    return {
        "SWITCHBOARD_KAFKA_BOOTSTRAP": "broker-1:9094,broker-2:9094",
        "SWITCHBOARD_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "SWITCHBOARD_KAFKA_SASL_MECHANISM": "scram-sha-512",
        "SWITCHBOARD_KAFKA_SASL_USERNAME": "switchboard",
        "SWITCHBOARD_KAFKA_SASL_PASSWORD": PASSWORD,
        "SWITCHBOARD_KAFKA_SSL_CAFILE": str(ca.cafile),
        **extra,
    }


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    settings = load_settings({})
    assert kafka_options(settings) == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "PLAINTEXT",
    }
    assert faust_credentials(settings) is None


def test_sasl_ssl_options_carry_credentials_and_a_verifying_context(ca: Authority) -> None:
    settings = load_settings(sasl_ssl(ca))
    options = kafka_options(settings)
    assert options["bootstrap_servers"] == "broker-1:9094,broker-2:9094"
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "switchboard"
    assert options["sasl_plain_password"] == PASSWORD
    context: ssl.SSLContext = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "switchboard-test-ca"),),)
    ]


@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT", "SSL"])
def test_faust_gets_the_same_security_as_every_other_client(ca: Authority, protocol: str) -> None:
    """What Faust hands aiokafka (its own translation of the credentials) equals ours."""
    env = sasl_ssl(ca, SWITCHBOARD_KAFKA_SECURITY_PROTOCOL=protocol)
    if protocol == "SSL":
        env = {k: v for k, v in env.items() if "SASL" not in k}
    if protocol == "SASL_PLAINTEXT":
        del env["SWITCHBOARD_KAFKA_SSL_CAFILE"]
    settings = load_settings(env)
    ours = kafka_options(settings)
    theirs = dict(credentials_to_aiokafka_auth(faust_credentials(settings)))
    assert theirs["security_protocol"] == ours["security_protocol"] == protocol
    for key in ("sasl_mechanism", "sasl_plain_username", "sasl_plain_password"):
        assert theirs.get(key) == ours.get(key)
    assert (theirs.get("ssl_context") is None) == (ours.get("ssl_context") is None)
    if ours.get("ssl_context") is not None:
        assert theirs["ssl_context"].get_ca_certs() == ours["ssl_context"].get_ca_certs()


def test_mutual_tls_loads_the_client_certificate(ca: Authority) -> None:
    client = ca.issue("switchboard-client", client=True)
    settings = load_settings(
        {
            "SWITCHBOARD_KAFKA_SECURITY_PROTOCOL": "SSL",
            "SWITCHBOARD_KAFKA_SSL_CAFILE": str(ca.cafile),
            "SWITCHBOARD_KAFKA_SSL_CERTFILE": str(client.cert),
            "SWITCHBOARD_KAFKA_SSL_KEYFILE": str(client.key),
        }
    )
    assert settings.kafka_ssl_certfile == client.cert
    assert kafka_options(settings)["ssl_context"] is not None
    other = ca.issue("someone-else", client=True)
    mismatched = settings.with_(kafka_ssl_keyfile=other.key)
    with pytest.raises(ssl.SSLError):
        kafka_options(mismatched)


def test_sasl_without_its_parts_names_each_missing_variable() -> None:
    problems = problems_of({"SWITCHBOARD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    assert any("SWITCHBOARD_KAFKA_SASL_MECHANISM" in p for p in problems)
    assert any("SWITCHBOARD_KAFKA_SASL_USERNAME" in p for p in problems)
    assert any("SWITCHBOARD_KAFKA_SASL_PASSWORD" in p for p in problems)


def test_inconsistent_security_settings_are_refused(ca: Authority, tmp_path: Path) -> None:
    assert problems_of({"SWITCHBOARD_KAFKA_SECURITY_PROTOCOL": "TLS"}) == [
        "SWITCHBOARD_KAFKA_SECURITY_PROTOCOL must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
    ]
    # Credentials with a protocol that would not send them: half a configuration.
    assert problems_of({"SWITCHBOARD_KAFKA_SASL_PASSWORD": PASSWORD}) == [
        "SWITCHBOARD_KAFKA_SASL_* are set but SWITCHBOARD_KAFKA_SECURITY_PROTOCOL is PLAINTEXT"
    ]
    assert problems_of({"SWITCHBOARD_KAFKA_SSL_CAFILE": str(ca.cafile)}) == [
        "SWITCHBOARD_KAFKA_SSL_CAFILE is set but SWITCHBOARD_KAFKA_SECURITY_PROTOCOL is PLAINTEXT"
    ]
    missing = tmp_path / "nope.pem"
    assert problems_of(sasl_ssl(ca, SWITCHBOARD_KAFKA_SSL_CAFILE=str(missing))) == [
        f"SWITCHBOARD_KAFKA_SSL_CAFILE names no readable file: {missing}"
    ]
    client = ca.issue("half", client=True)
    assert problems_of(sasl_ssl(ca, SWITCHBOARD_KAFKA_SSL_CERTFILE=str(client.cert))) == [
        "SWITCHBOARD_KAFKA_SSL_CERTFILE and _KEYFILE go together (mutual TLS)"
    ]
    assert problems_of(sasl_ssl(ca, SWITCHBOARD_KAFKA_SASL_MECHANISM="GSSAPI")) == [
        "SWITCHBOARD_KAFKA_SASL_MECHANISM must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 "
        "with SASL_SSL"
    ]


def test_the_password_is_never_shown(ca: Authority) -> None:
    settings = load_settings(sasl_ssl(ca))
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in describe(settings)
    assert describe(settings) == (
        "broker-1:9094,broker-2:9094 (SASL_SSL/SCRAM-SHA-512 as switchboard)"
    )
    assert PASSWORD not in repr(faust_credentials(settings))
    problems = problems_of(sasl_ssl(ca, SWITCHBOARD_KAFKA_SASL_MECHANISM="nope"))
    assert all(PASSWORD not in p for p in problems)


# --------------------------------------------------------------- every client uses it

KAFKA_CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}


def _calls(path: Path) -> list[ast.Call]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


def _name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _spreads_kafka_options(call: ast.Call) -> bool:
    return any(
        k.arg is None and isinstance(k.value, ast.Call) and _name(k.value) == "kafka_options"
        for k in call.keywords
    )


def test_every_kafka_client_in_the_code_is_built_with_kafka_options() -> None:
    """A client built from the bootstrap string alone would ignore TLS and SASL."""
    sources = [
        p
        for top in ("pipeline", "agents", "tables", "testbed", "bench")
        for p in (ROOT / top).rglob("*.py")
    ]
    offenders, found = [], 0
    for path in sources:
        for call in _calls(path):
            if _name(call) in KAFKA_CLIENTS:
                found += 1
                if not _spreads_kafka_options(call):
                    offenders.append(f"{path.relative_to(ROOT)}:{call.lineno}")
    assert found >= 5, "the walk found too few Kafka clients to mean anything"
    assert not offenders, "Kafka clients without **kafka_options(settings): " + ", ".join(offenders)


def test_the_faust_app_gets_broker_credentials() -> None:
    calls = [c for c in _calls(ROOT / "agents" / "app.py") if _name(c) == "App"]
    assert len(calls) == 1
    keywords = {k.arg: k.value for k in calls[0].keywords}
    value = keywords.get("broker_credentials")
    assert isinstance(value, ast.Call) and _name(value) == "faust_credentials"


def test_a_worker_app_built_with_sasl_ssl_settings_carries_them(
    ca: Authority, tmp_path: Path
) -> None:
    from agents.app import create_faust_app

    settings = load_settings(sasl_ssl(ca)).with_(data_dir=tmp_path)
    app = create_faust_app(settings, store="memory://")
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert [str(u) for u in app.conf.broker] == [
        "kafka://broker-1:9094",
        "kafka://broker-2:9094",
    ]
    assert Settings().kafka_security_protocol == "PLAINTEXT"
