"""``mmr ingest``: send a folder's images, audio and text files to a running server through
its batch route, resumably (docs/ingest.md). A client of the HTTP API like any other: it
imports nothing of the server's own code."""
