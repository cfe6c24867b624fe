"""Small files that claim more than they hold: the reproductions of issue 15 (an audio header
claiming an absurd sampling rate or length, an image header claiming billions of pixels)."""

from __future__ import annotations

import io
import struct
import zlib


def wav_claiming(rate: int, *, frames: int = 4, channels: int = 1) -> bytes:
    """A 16-bit PCM WAV whose header says ``rate`` Hz, holding ``frames`` frames of silence
    (the default is 52 bytes)."""
    data = b"\x00\x00" * frames * channels
    fmt = struct.pack(
        "<HHIIHH", 1, channels, rate, (rate * 2 * channels) & 0xFFFFFFFF, 2 * channels, 16
    )
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def flac_of_silence(seconds: float, rate: int = 16000) -> bytes:
    """A FLAC file of ``seconds`` of silence: long audio in a few kilobytes."""
    import numpy as np
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(int(seconds * rate), np.int16), rate, format="FLAC")
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` x ``height`` (greyscale), with one row of data: a
    decoder that trusted the header would allocate ``width * height`` bytes."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    row = zlib.compress(b"\x00" + b"\x00" * min(width, 1024))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", row) + chunk(b"IEND", b"")
