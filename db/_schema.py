"""Versioned schema of the tuning database.

Each migration is SQL applied once, in order; ``PRAGMA user_version`` records how many have been
applied. They run under ``BEGIN IMMEDIATE`` so that processes opening a new file at the same
time apply them exactly once (the second waits for the write lock, then sees the new version).
Never edit a released migration: append a new one.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: trials, best configs, hardware fingerprints
    """
    CREATE TABLE hardware (
        key TEXT PRIMARY KEY,
        info TEXT NOT NULL                 -- JSON of search_space.Hardware
    ) STRICT;

    CREATE TABLE trials (
        id INTEGER PRIMARY KEY,
        trial_uid TEXT UNIQUE,             -- "<study>#<trial number>": a trial is stored once
        study TEXT,
        hardware TEXT NOT NULL REFERENCES hardware(key),
        kernel TEXT NOT NULL,
        kernel_hash TEXT NOT NULL,
        bucket TEXT NOT NULL,
        spec TEXT NOT NULL,                -- JSON
        config TEXT NOT NULL,              -- JSON, sorted keys
        config_key TEXT NOT NULL,
        status TEXT NOT NULL,
        time_ms REAL,
        times_ms TEXT,                     -- JSON list of repetitions
        compile_ms REAL,
        cost_ms REAL,
        error TEXT,
        backend TEXT NOT NULL,
        real_timing INTEGER NOT NULL,
        versions TEXT NOT NULL,            -- JSON: tritune, torch, triton, python
        created_at TEXT NOT NULL
    ) STRICT;
    CREATE INDEX trials_problem ON trials(hardware, kernel, bucket);
    CREATE INDEX trials_study ON trials(study);

    CREATE TABLE best (
        hardware TEXT NOT NULL,
        kernel TEXT NOT NULL,
        kernel_hash TEXT NOT NULL,
        bucket TEXT NOT NULL,
        spec TEXT NOT NULL,
        config TEXT NOT NULL,
        time_ms REAL NOT NULL,
        backend TEXT NOT NULL,
        real_timing INTEGER NOT NULL,
        trial_id INTEGER,
        source TEXT NOT NULL,              -- "local", or where it was imported/merged from
        updated_at TEXT NOT NULL,
        PRIMARY KEY (hardware, kernel, kernel_hash, bucket)
    ) STRICT;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)
