"""Decoding uploads: images and audio sniffed from their bytes, headers checked before a
decode starts, and the decoded bytes held to a budget (bombs, lying headers, caps)."""
