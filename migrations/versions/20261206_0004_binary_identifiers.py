"""Identifier columns compare byte for byte (issue 12, defect 1; docs/integrity.md).

Python tells ``"+14155550142"`` from ``"+14155550142 "`` and ``"uidA"`` from ``"uida"``;
the default collations did not (PAD SPACE, case- and accent-insensitive), so a second row
that Python saw as new hit a duplicate key no retry could clear. The identifier columns get
the server's binary NO PAD collation: ``utf8mb4_nopad_bin`` on MariaDB, ``utf8mb4_0900_bin``
on MySQL 8. The apply path also normalises phones (E.164) and e-mail addresses (NFKC,
casefold) before comparing them; stored e-mail addresses are lower-cased and phones
trimmed here, so that rows written before keep matching. (Neither can collide: the old
collation already treated those values as equal in the unique key on phones, and the
e-mail index is not unique.)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from alembic import op
from sqlalchemy import text

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# table -> (column, length, nullable); every one is VARCHAR without a default.
IDENTIFIERS: dict[str, list[tuple[str, int, bool]]] = {
    "webhook_events": [("event_id", 255, False)],
    "calls": [
        ("retell_call_id", 128, False),
        ("agent_id", 128, True),
        ("from_number", 32, True),
        ("to_number", 32, True),
    ],
    "appointments": [
        ("calcom_uid", 128, False),
        ("retell_call_id", 128, True),
        ("rescheduled_from_uid", 128, True),
    ],
    "customers": [("phone", 32, True), ("email", 320, True)],
    "branches": [("phone_number", 32, False), ("retell_agent_id", 128, True)],
}


def binary_collation() -> str:
    """The server's binary collation without trailing-space padding."""
    version = str(op.get_bind().execute(text("SELECT VERSION()")).scalar())
    return "utf8mb4_nopad_bin" if "mariadb" in version.lower() else "utf8mb4_0900_bin"


def _modify(table: str, collation: str) -> None:
    parts = [
        f"MODIFY `{column}` VARCHAR({length}) CHARACTER SET utf8mb4 COLLATE {collation}"
        f" {'NULL' if nullable else 'NOT NULL'}"
        for column, length, nullable in IDENTIFIERS[table]
    ]
    op.execute(f"ALTER TABLE `{table}` " + ", ".join(parts))


def upgrade() -> None:
    op.execute("UPDATE customers SET email = LOWER(TRIM(email)) WHERE email IS NOT NULL")
    op.execute("UPDATE customers SET phone = TRIM(phone) WHERE phone IS NOT NULL")
    collation = binary_collation()
    for table in IDENTIFIERS:
        _modify(table, collation)


def downgrade() -> None:
    bind = op.get_bind()
    for table in IDENTIFIERS:
        collation = bind.execute(
            text(
                "SELECT TABLE_COLLATION FROM information_schema.TABLES"
                " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t"
            ),
            {"t": table},
        ).scalar()
        _modify(table, str(collation))
