"""Use cases composed from models/ and index/; the routers call only these."""
