"""Django's SQLite backend with writers admitted in turn (see base.py)."""
