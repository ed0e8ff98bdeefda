"""Analyst tokens: hashed entries with scopes, plain development entries, constant-time
checks that never fail on odd input, and the ``tokens new`` command's entry working."""

from __future__ import annotations

import hashlib
import json

import pytest
from click.testing import CliRunner

from pipeline.cli import cli, register_commands
from pipeline.dashboard import tokens
from pipeline.dashboard.analyst_api import default_token
from pipeline.errors import ConfigError
from pipeline.settings import load_settings


def entry_for(token: str, scope: str, name: str = "") -> str:
    prefix = f"{name}=" if name else ""
    return f"{prefix}sha256:{hashlib.sha256(token.encode()).hexdigest()}@{scope}"


def test_hashed_entries_carry_their_scope() -> None:
    book = tokens.TokenBook.parse(
        [entry_for("tok-a", "1+3", "ana"), entry_for("tok-b", "admin", "bi")]
    )
    ana, bi = book.check("tok-a"), book.check("tok-b")
    assert ana is not None and ana.name == "ana" and ana.companies == {1, 3}
    assert ana.may_read(3) and not ana.may_read(2)
    assert bi is not None and bi.admin and bi.may_read(999)
    assert book.check("tok-c") is None
    assert not book.plain


def test_plain_entries_still_work_for_development() -> None:
    book = tokens.TokenBook.parse(["dev-token", "scoped-dev@2"])
    dev, scoped = book.check("dev-token"), book.check("scoped-dev")
    assert dev is not None and dev.admin and not dev.hashed
    assert scoped is not None and scoped.companies == {2}
    assert len(book.plain) == 2


@pytest.mark.parametrize("token", ["dGVzdA==", "YWI=", "a2V5=@2"])
def test_a_plain_token_ending_in_base64_padding_is_the_whole_token(token: str) -> None:
    # "dGVzdA==" is not the name "dGVzdA" with the token "=": a name labels a token that
    # follows it, and base64's padding "=" only ever ends one.
    book = tokens.TokenBook.parse([token, "named=tok-n"])
    credential = token.partition("@")[0]
    grant = book.check(credential)
    assert grant is not None and grant.name == "token-1"
    assert book.check("=") is None and book.check("") is None
    named = book.check("tok-n")
    assert named is not None and named.name == "named"


@pytest.mark.parametrize(
    "offered",
    ["", "tök", "tok\udcff", "x" * 10_000, "sha256:" + "0" * 64, "\x00", "tok-a "],
)
def test_odd_tokens_are_refused_never_an_error(offered: str) -> None:
    book = tokens.TokenBook.parse([entry_for("tok-a", "1")])
    assert book.check(offered) is None


@pytest.mark.parametrize(
    "bad",
    [
        "sha256:abc@1",  # not 64 hex digits
        "sha256:" + "a" * 64,  # no scope
        "sha256:" + "A" * 64 + "@1",  # upper case
        "sha256:" + "a" * 64 + "@01",  # leading zero
        "sha256:" + "a" * 64 + "@1,2",  # commas separate entries, not companies
        "sha256:" + "a" * 64 + "@everyone",
        "tok en",
        "tök",
    ],
)
def test_bad_entries_are_one_config_error_without_the_token(bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        tokens.TokenBook.parse(["fine", bad])
    assert "entry" in str(caught.value)
    if "sha256" not in bad:
        assert bad not in str(caught.value)


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="twice"):
        tokens.TokenBook.parse([entry_for("a", "1", "x"), entry_for("b", "2", "x")])


def test_bearer_header_parsing() -> None:
    assert tokens.bearer("Bearer abc") == "abc"
    assert tokens.bearer("bearer  abc ") == "abc"
    assert tokens.bearer("Basic abc") is None
    assert tokens.bearer(None) is None
    assert tokens.bearer("Bearer") is None


def test_the_client_default_token_is_the_first_plain_one() -> None:
    hashed = entry_for("secret", "admin", "prod")
    settings = load_settings({"SWITCHBOARD_ANALYST_TOKENS": f"{hashed},dev=tok-dev@1"})
    assert default_token(settings) == "tok-dev"
    only_hashed = load_settings({"SWITCHBOARD_ANALYST_TOKENS": hashed})
    assert default_token(only_hashed) is None


def test_tokens_new_prints_a_token_and_an_entry_that_accepts_it() -> None:
    register_commands()
    result = CliRunner().invoke(cli, ["tokens", "new", "--companies", "2, 5", "--name", "ana"])
    assert result.exit_code == 0, result.output
    lines = dict(line.split(":  ", 1) for line in result.output.splitlines() if ":  " in line)
    token, entry = lines["token"], lines["entry"]
    assert token.startswith("sbt_") and len(token) > 40
    assert token not in entry and entry.startswith("ana=sha256:") and entry.endswith("@2+5")
    grant = tokens.TokenBook.parse([entry]).check(token)
    assert grant is not None and grant.companies == {2, 5}
    admin = CliRunner().invoke(cli, ["tokens", "new", "--admin"])
    assert admin.exit_code == 0 and admin.output.splitlines()[1].endswith("@admin")
    both = CliRunner().invoke(cli, ["tokens", "new", "--admin", "--companies", "1"])
    assert both.exit_code == 2
    scripted = CliRunner().invoke(cli, ["tokens", "new", "--admin", "--json"])
    assert scripted.exit_code == 0, scripted.output
    minted = json.loads(scripted.output)
    assert tokens.TokenBook.parse([minted["entry"]]).check(minted["token"]) is not None
