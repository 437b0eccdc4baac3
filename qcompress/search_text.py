"""Moved to `qcompress.search.text` (query texts against a compressed corpus); re-exported here for old imports."""

from qcompress.search.text import Hit, search_texts

__all__ = ["Hit", "search_texts"]
