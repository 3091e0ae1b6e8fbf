"""The tuning database (SQLite through sqlite-utils): every trial, best verified config per key."""

from ._schema import SCHEMA_VERSION
from ._store import (
    EXPORT_FORMAT,
    BestConfig,
    DatabaseError,
    SchemaTooNewError,
    Trial,
    TuningDB,
    default_db_path,
    versions,
)

__all__ = [
    "EXPORT_FORMAT",
    "SCHEMA_VERSION",
    "BestConfig",
    "DatabaseError",
    "SchemaTooNewError",
    "Trial",
    "TuningDB",
    "default_db_path",
    "versions",
]
