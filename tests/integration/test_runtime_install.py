"""The image's Python side, without Docker: a clean virtualenv installed as the Dockerfile
does (``pip install --require-hashes -r requirements.lock``, then the project with
``--no-deps``) has everything the processes need, and nothing from the dev extras.

In particular it can do MySQL 8's default login: ``caching_sha2_password`` on a connection
without TLS makes PyMySQL RSA-encrypt the password with the server's public key, which needs
``cryptography`` (PyMySQL's ``rsa`` extra). Dev and CI venvs got ``cryptography`` from a dev
dependency, which is how the image's lack of it went unnoticed; this venv has no dev extras.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ROOT = Path(__file__).resolve().parents[2]

# What PyMySQL does for caching_sha2_password "full authentication" without TLS.
RSA_LOGIN = """
import sys
from pymysql import _auth
public_pem, salt = open(sys.argv[1], "rb").read(), bytes.fromhex(sys.argv[2])
sys.stdout.write(_auth.sha2_rsa_encrypt(b"mysql-8-password", salt, public_pem).hex())
"""


def run(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=cwd)
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("runtime") / "venv"
    run(sys.executable, "-m", "venv", str(venv))
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    run(*pip, "install", "--no-input", "--require-hashes", "-r", str(ROOT / "requirements.lock"))
    run(*pip, "install", "--no-input", "--no-deps", str(ROOT))
    run(*pip, "check")
    return venv


def test_the_runtime_install_runs_every_command(runtime_venv: Path) -> None:
    out = run(str(runtime_venv / "bin" / "switchboard"), "--help")
    for command in ("ingress", "worker", "migrate", "topics", "doctor", "replay", "reconcile"):
        assert f"  {command} " in out, command
    # No dev extras: the test tools are not there, so nothing here depends on them.
    missing = run(
        str(runtime_venv / "bin" / "python"),
        "-c",
        "import importlib.util as u; print([m for m in ('pytest', 'retell', 'hypothesis') if u.find_spec(m)])",
    )
    assert missing.strip() == "[]"


def test_the_runtime_install_can_do_mysql_8_rsa_password_exchange(
    runtime_venv: Path, tmp_path: Path
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = tmp_path / "server-public.pem"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    salt = bytes(range(1, 21))
    sealed = run(str(runtime_venv / "bin" / "python"), "-c", RSA_LOGIN, str(public), salt.hex())
    # The server's side: decrypt with its private key, undo the XOR with the salt.
    plain = key.decrypt(
        bytes.fromhex(sealed),
        padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),
    )
    password = bytes(b ^ salt[i % len(salt)] for i, b in enumerate(plain))
    assert password == b"mysql-8-password\0"
