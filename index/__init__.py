"""Where things are kept: SQL metadata (one store per resource, index/stores.py), original
bytes, FAISS indexes and their snapshots.

Imports nothing from app/ or models/: what projects raw features into a collection's space
is passed in (index/builds.py, Projector).
"""
