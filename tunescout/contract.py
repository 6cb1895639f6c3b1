"""Constants that the service shares with its clients: the audio file extensions and the catalogue's page limit.

Standard library only, and nothing else from tunescout: the uploader, which otherwise knows only the
HTTP contract, imports this module (and, to fingerprint on the client, tunescout.audio, so that both
sides decode alike), to pick files by the same extensions as `tunescout ingest`.
"""

from __future__ import annotations

# What a folder walk picks as audio (lower case, without the dot): `tunescout ingest` and the uploader.
# The service itself accepts anything ffmpeg decodes, whatever its name.
AUDIO_EXTENSIONS = (
    "mp3",
    "ogg",
    "oga",
    "opus",
    "flac",
    "wav",
    "m4a",
    "aac",
    "wma",
    "aif",
    "aiff",
    "mp4",
    "mkv",
    "webm",
    "mov",
    "avi",
)

# The most songs one page of GET /api/songs (and `tunescout songs list`) holds.
MAX_PAGE_SIZE = 1000
