"""``load_settings``: every variable of the README's configuration table, one error naming every bad one, no secret shown."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.settings import DEFAULT_DATABASE_URL, Secret, Settings, load_settings

# Distinctive texts, so "absent from the output" cannot pass by accident.
URL_PASSWORD = "pw-7f3a9c1e-url"
RETELL_KEYS = ("retell-key-old-51c2", "retell-key-new-88d0")
CALCOM_SECRETS = ("calcom-secret-old-0b4e", "calcom-secret-new-2f61")
ANALYST_TOKENS = ("analyst-token-a-93aa", "analyst-token-b-17fe")
ALL_SECRETS = (URL_PASSWORD, *RETELL_KEYS, *CALCOM_SECRETS, *ANALYST_TOKENS)


def full_environ() -> dict[str, str]:
    """Every the README's configuration table variable set to a non-default value."""
    return {
        "SWITCHBOARD_KAFKA_BOOTSTRAP": "kafka-1:19092,kafka-2:19093",
        "SWITCHBOARD_DATABASE_URL": f"mysql+pymysql://app:{URL_PASSWORD}@db.internal:3307/sb",
        "RETELL_API_KEY": ",".join(RETELL_KEYS),
        "CALCOM_WEBHOOK_SECRET": ",".join(CALCOM_SECRETS),
        "SWITCHBOARD_INGRESS_HOST": "0.0.0.0",
        "SWITCHBOARD_INGRESS_PORT": "18080",
        "SWITCHBOARD_WORKER_HOST": "10.1.2.3",
        "SWITCHBOARD_WORKER_PORT": "16066",
        "SWITCHBOARD_ANALYST_TOKENS": ",".join(ANALYST_TOKENS),
        "SWITCHBOARD_DATA_DIR": "/srv/switchboard/state",
    }


def problems_of(environ: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    return caught.value.problems


# ------------------------------------------------------------------ defaults and overrides


def test_defaults_match_spec() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.database_url.reveal() == DEFAULT_DATABASE_URL
    assert DEFAULT_DATABASE_URL == (
        "mysql+pymysql://switchboard:switchboard@127.0.0.1:3306/switchboard"
    )
    assert settings.retell_api_keys == ()
    assert settings.calcom_webhook_secrets == ()
    assert (settings.ingress_host, settings.ingress_port) == ("127.0.0.1", 8080)
    assert (settings.worker_host, settings.worker_port) == ("127.0.0.1", 6066)
    assert settings.analyst_tokens == ()
    assert settings.data_dir == Path("./var")
    assert settings.topic_partitions == 12  # docs/architecture.md: "12 by default"


def test_unconfigured_provider_has_no_secrets() -> None:
    """the README's configuration table: a provider without a secret is refused, so the verifier must get nothing."""
    settings = load_settings({})
    assert settings.secrets_for("retell") == ()
    assert settings.secrets_for("calcom") == ()
    assert settings.secrets_for("unknown-provider") == ()


def test_every_variable_overrides_its_default() -> None:
    settings = load_settings(full_environ())
    assert settings.kafka_bootstrap == "kafka-1:19092,kafka-2:19093"
    assert settings.database_url.reveal() == full_environ()["SWITCHBOARD_DATABASE_URL"]
    assert settings.secrets_for("retell") == RETELL_KEYS
    assert settings.secrets_for("calcom") == CALCOM_SECRETS
    assert tuple(t.reveal() for t in settings.analyst_tokens) == ANALYST_TOKENS
    assert (settings.ingress_host, settings.ingress_port) == ("0.0.0.0", 18080)
    assert (settings.worker_host, settings.worker_port) == ("10.1.2.3", 16066)
    assert settings.data_dir == Path("/srv/switchboard/state")
    for field in dataclasses.fields(Settings):
        if field.name in {
            "kafka_bootstrap", "database_url", "retell_api_keys", "calcom_webhook_secrets",
            "ingress_host", "ingress_port", "worker_host", "worker_port", "analyst_tokens",
            "data_dir",
        }:  # fmt: skip
            assert getattr(settings, field.name) != getattr(Settings(), field.name), field.name


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("only-one", ("only-one",)),
        ("old,new", ("old", "new")),
        (" old , new ", ("old", "new")),  # spaces around the commas are not part of a key
        ("old,,new,", ("old", "new")),  # empty entries are dropped, not kept as "" secrets
        ("", ()),
        (" , ", ()),
    ],
)
def test_secret_lists_accept_rotation(raw: str, expected: tuple[str, ...]) -> None:
    settings = load_settings(
        {"RETELL_API_KEY": raw, "CALCOM_WEBHOOK_SECRET": raw, "SWITCHBOARD_ANALYST_TOKENS": raw}
    )
    assert settings.secrets_for("retell") == expected
    assert settings.secrets_for("calcom") == expected
    assert tuple(t.reveal() for t in settings.analyst_tokens) == expected
    assert "" not in settings.secrets_for("retell")


def test_values_are_stripped() -> None:
    settings = load_settings(
        {
            "SWITCHBOARD_INGRESS_HOST": "  0.0.0.0 ",
            "SWITCHBOARD_WORKER_PORT": " 7000 ",
            "SWITCHBOARD_DATA_DIR": " /tmp/x ",
        }
    )
    assert settings.ingress_host == "0.0.0.0"
    assert settings.worker_port == 7000
    assert settings.data_dir == Path("/tmp/x")


def test_password_with_percent_is_kept_verbatim() -> None:
    url = "mysql+pymysql://u:p%40ss%25word@127.0.0.1:3306/db"
    assert load_settings({"SWITCHBOARD_DATABASE_URL": url}).database_url.reveal() == url


def test_mariadb_driver_is_accepted() -> None:
    url = "mariadb+pymysql://u:p@127.0.0.1/db"
    assert load_settings({"SWITCHBOARD_DATABASE_URL": url}).database_url.reveal() == url


def test_tuning_knobs_parse() -> None:
    settings = load_settings(
        {
            "SWITCHBOARD_TOPIC_PARTITIONS": "3",
            "SWITCHBOARD_TOPIC_PREFIX": "t1.",
            "SWITCHBOARD_ACK_BUDGET_S": "0.5",
            "SWITCHBOARD_CONSUMER_GROUP": "g",
            "SWITCHBOARD_WORKER_BATCHES_IN_FLIGHT": "1",
        }
    )
    assert settings.topic_partitions == 3
    assert settings.topic("webhooks.retell") == "t1.webhooks.retell"
    assert settings.ack_budget_s == 0.5
    assert settings.consumer_group == "g"
    assert (settings.worker_batches_in_flight, Settings().worker_batches_in_flight) == (1, 8)
    assert problems_of({"SWITCHBOARD_WORKER_BATCHES_IN_FLIGHT": "0"})
    assert problems_of({"SWITCHBOARD_WORKER_APPLY_PROCESS": "2"})


def test_settings_are_frozen() -> None:
    settings = load_settings({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.worker_port = 1  # type: ignore[misc]
    assert settings.with_(worker_port=1).worker_port == 1
    assert settings.worker_port == 6066


def test_only_the_given_mapping_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """No hidden ``os.environ`` reads; the caller passes the environment."""
    monkeypatch.setenv("SWITCHBOARD_WORKER_PORT", "abc")
    monkeypatch.setenv("SWITCHBOARD_INGRESS_PORT", "1234")
    settings = load_settings({})
    assert settings.worker_port == 6066
    assert settings.ingress_port == 8080


# ------------------------------------------------------------------ bad values


def test_one_error_lists_every_bad_variable() -> None:
    environ = {
        "SWITCHBOARD_KAFKA_BOOTSTRAP": "kafka:notaport",
        "SWITCHBOARD_DATABASE_URL": f"postgresql://app:{URL_PASSWORD}@db/sb",
        "SWITCHBOARD_INGRESS_HOST": "   ",
        "SWITCHBOARD_INGRESS_PORT": "eighty",
        "SWITCHBOARD_WORKER_HOST": "",
        "SWITCHBOARD_WORKER_PORT": "70000",
        "SWITCHBOARD_DATA_DIR": " ",
        "SWITCHBOARD_TOPIC_PARTITIONS": "0",
        "SWITCHBOARD_ACK_BUDGET_S": "nan",
        # fine ones: must not be reported
        "RETELL_API_KEY": RETELL_KEYS[0],
        "SWITCHBOARD_ANALYST_TOKENS": ANALYST_TOKENS[0],
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    problems = caught.value.problems
    bad = [k for k in environ if k not in {"RETELL_API_KEY", "SWITCHBOARD_ANALYST_TOKENS"}]
    assert len(problems) == len(bad), problems
    for var in bad:
        assert sum(p.startswith(var + " ") for p in problems) == 1, (var, problems)
    message = str(caught.value)
    assert "\n" not in message
    for var in bad:
        assert var in message
    assert URL_PASSWORD not in message


@pytest.mark.parametrize("var", ["SWITCHBOARD_INGRESS_PORT", "SWITCHBOARD_WORKER_PORT"])
@pytest.mark.parametrize("raw", ["abc", "", "0", "-1", "65536", "80.5", "1e3"])
def test_bad_ports(var: str, raw: str) -> None:
    (problem,) = problems_of({var: raw})
    assert problem.startswith(var)


@pytest.mark.parametrize("var", ["SWITCHBOARD_INGRESS_PORT", "SWITCHBOARD_WORKER_PORT"])
@pytest.mark.parametrize("raw", ["1", "65535"])
def test_edge_ports_are_fine(var: str, raw: str) -> None:
    settings = load_settings({var: raw})
    port = settings.ingress_port if var == "SWITCHBOARD_INGRESS_PORT" else settings.worker_port
    assert port == int(raw)


@pytest.mark.parametrize(
    "raw",
    ["127.0.0.1:abc", "127.0.0.1:0", "127.0.0.1:65536", ":9092", "a:9092,", " , ", "[::1]x", ""],
)
def test_bad_kafka_bootstrap(raw: str) -> None:
    """aiokafka parses the list only on connect (a bad port is a bare ValueError there)."""
    (problem,) = problems_of({"SWITCHBOARD_KAFKA_BOOTSTRAP": raw})
    assert problem.startswith("SWITCHBOARD_KAFKA_BOOTSTRAP")


@pytest.mark.parametrize(
    "raw", ["127.0.0.1:9092", "k1:9092, k2:9093", "kafka", "[::1]:9092", "[::1]", "::1"]
)
def test_good_kafka_bootstrap(raw: str) -> None:
    assert load_settings({"SWITCHBOARD_KAFKA_BOOTSTRAP": raw}).kafka_bootstrap == raw.strip()


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        f"mysql+pymysql://app:{URL_PASSWORD}@db:notaport/sb",
        f"mysql+pymysql://app:{URL_PASSWORD}@db:0/sb",
        f"mysql+pymysql://app:{URL_PASSWORD}@db:99999/sb",
        f"postgresql://app:{URL_PASSWORD}@db/sb",
        f"sqlite:///{URL_PASSWORD}.db",
    ],
)
def test_bad_database_url(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"SWITCHBOARD_DATABASE_URL": url})
    (problem,) = caught.value.problems
    assert problem.startswith("SWITCHBOARD_DATABASE_URL")
    assert URL_PASSWORD not in str(caught.value)
    assert URL_PASSWORD not in repr(caught.value)


# ------------------------------------------------------------------ secrets stay hidden


def test_secrets_never_in_repr_or_str() -> None:
    settings = load_settings(full_environ())
    for shown in (repr(settings), str(settings), f"{settings}", f"{settings!r}"):
        for secret in ALL_SECRETS:
            assert secret not in shown
        assert "***" in shown
    # The non-secret parts are still visible (the repr is useful, not blank).
    assert "kafka-1:19092" in repr(settings)
    assert "18080" in repr(settings)
    # Nor through the fields on their own, e.g. a log line that formats one list.
    for value in (settings.retell_api_keys, settings.calcom_webhook_secrets,
                  settings.analyst_tokens, settings.database_url):  # fmt: skip
        for secret in ALL_SECRETS:
            assert secret not in repr(value)
            assert secret not in str(value)


def test_secret_wrapper() -> None:
    secret = Secret("hunter2")
    assert secret.reveal() == "hunter2"
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in str(secret)
    assert "hunter2" not in f"{secret}"
    assert secret == Secret("hunter2")
    assert secret != Secret("hunter3")
    assert secret != "hunter2"  # a plain string never compares equal to a secret
