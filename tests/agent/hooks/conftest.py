"""One PostgreSQL cluster and one MariaDB server for the whole hooks package (started on first use)."""

from __future__ import annotations

import shutil

import pytest

from .servers import Mariadb, numbered_postgres


@pytest.fixture(scope="package")
def pg():
    server = numbered_postgres()
    yield server
    server.stop()
    shutil.rmtree(server.socket_dir, ignore_errors=True)


@pytest.fixture(scope="package")
def mariadb():
    server = Mariadb.create()
    server.start()
    server.sql("CREATE DATABASE app; CREATE TABLE app.numbered (id bigint PRIMARY KEY, pad text NOT NULL) ENGINE=InnoDB; "
               "CREATE TABLE app.journal (id bigint PRIMARY KEY, pad text NOT NULL) ENGINE=MyISAM")
    yield server
    server.stop()
    shutil.rmtree(server.base, ignore_errors=True)
