"""Audio recognition by magic bytes (decoding arrives with the audio encoders)."""

from __future__ import annotations


def sniff_audio(data: bytes) -> str | None:
    """MIME type of a WAV, FLAC, Ogg or MP3 file from its first bytes, else None."""
    head = data[:12]
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[:4] == b"fLaC":
        return "audio/flac"
    if head[:4] == b"OggS":
        return "audio/ogg"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "audio/mpeg"
    return None
