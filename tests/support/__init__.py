"""Test support: catalogs on SQLite and PostgreSQL, a real server process, clients."""
