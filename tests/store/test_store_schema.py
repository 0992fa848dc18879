"""Schema and migrations: from an empty file, from an older (v1) database, refusing newer ones.

tests/store/data/v1.db was made once by `migrate(conn, target=1)` plus the rows of `_fill_v1`
(then VACUUM). Never regenerate it after migration 1 changes: migration 1 must not change.
"""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from pipeline.store import SCHEMA_VERSION, SchemaVersionError, Store, StoreError
from pipeline.store.schema import MIGRATIONS, migrate, user_version

V1_FIXTURE = Path(__file__).parent / "data" / "v1.db"
ALL_TABLES = {"arrays", "images", "predictions", "revisions", "masks", "point_pairs", "audit",
              "jobs", "job_metrics", "job_logs", "checkpoints", "image_counts", "image_tags", "confidence_bins"}


def tables(conn) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def schema_sql(conn) -> list[tuple[str, str]]:
    return sorted(conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL"))


def test_migrations_are_numbered_in_order():
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert SCHEMA_VERSION == MIGRATIONS[-1].version == 9


def test_empty_file_migrates_to_current_with_wal_and_foreign_keys(tmp_path):
    store = Store(tmp_path / "new.db")
    conn = store.db.conn
    assert store.schema_version == SCHEMA_VERSION
    assert tables(conn) == ALL_TABLES
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    index_names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"idx_images_status_conf", "idx_images_status_name", "idx_images_status_created"} <= index_names
    assert (tmp_path / "new-files").name == store.files_dir.name


def test_reopening_does_not_migrate_again(tmp_path):
    Store(tmp_path / "s.db")
    conn = sqlite3.connect(tmp_path / "s.db")
    before = schema_sql(conn)
    assert migrate(conn) == SCHEMA_VERSION
    assert schema_sql(conn) == before


def _fill_v1(conn) -> None:
    conn.execute("INSERT INTO arrays VALUES ('aa', 'float32', '[2, 2]', 144, 't0')")
    conn.execute("INSERT INTO images (id, sha256, name, ext, nbytes, width, height, source, status, "
                 "confidence, head_revision_id, created_at, updated_at) VALUES "
                 "(1, 'ff', 'old.png', '.png', 10, 2, 2, 'cli', 'accepted', 0.5, 1, 't0', 't1')")
    conn.execute("INSERT INTO revisions VALUES (1, 1, NULL, 1, 'pseudo_label', 'disparity', 'aa', 'm', NULL, "
                 "'model:m', NULL, 't0')")
    conn.commit()


def test_migrating_a_v1_database_keeps_its_rows(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    assert migrate(conn, target=1) == 1
    _fill_v1(conn)
    assert tables(conn) == ALL_TABLES - {"jobs", "job_metrics", "job_logs", "checkpoints", "image_counts",
                                         "image_tags", "confidence_bins"}
    conn.close()
    store = Store(path)
    assert store.schema_version == SCHEMA_VERSION
    assert tables(store.db.conn) == ALL_TABLES
    img = store.get_image(1)
    assert (img.name, img.status, img.confidence, img.head_revision_id) == ("old.png", "accepted", 0.5, 1)
    assert store.get_revision(1).tool == "pseudo_label"
    assert store.list_jobs() == []


def test_committed_v1_fixture_matches_migration_1_and_migrates(tmp_path):
    """Guards against editing migration 1 in place: the committed file is what it made."""
    fresh = sqlite3.connect(tmp_path / "fresh.db")
    migrate(fresh, target=1)
    fixture = sqlite3.connect(V1_FIXTURE)
    assert user_version(fixture) == 1
    assert schema_sql(fixture) == schema_sql(fresh)
    fixture.close()
    copy = tmp_path / "v1.db"
    shutil.copy(V1_FIXTURE, copy)
    store = Store(copy)
    assert store.schema_version == SCHEMA_VERSION
    assert [(i.id, i.name, i.status) for i in store.list_images(sort="id").items] == [(1, "old.png", "accepted")]


def test_a_newer_database_is_refused(tmp_path):
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaVersionError, match=rf"schema version {SCHEMA_VERSION + 1}.*update"):
        Store(path)


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("this is not sqlite " * 100)
    with pytest.raises(StoreError, match="notes.db is not a usable SQLite database"):
        Store(path)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="folder .*nope does not exist"):
        Store(tmp_path / "nope" / "s.db")


def test_many_stores_opening_a_new_file_at_once_migrate_it_once(tmp_path):
    import threading
    barrier, versions, errors = threading.Barrier(4), [], []

    def open_store():
        barrier.wait()
        try:
            versions.append(Store(tmp_path / "race.db").schema_version)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (errors, versions) == ([], [SCHEMA_VERSION] * 4)
