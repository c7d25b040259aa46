"""What is computed: encoders, aligner heads, media decoding.

Imports nothing from app/ or index/.
"""
