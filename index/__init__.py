"""Where things are kept: SQL metadata, original bytes, FAISS indexes and their snapshots.

Imports nothing from app/.
"""
