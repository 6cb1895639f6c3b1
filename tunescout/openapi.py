"""OPENAPI: the OpenAPI 3.0 description of every endpoint, field and error (served at /api/openapi.json)."""

from __future__ import annotations

from . import __version__
from .contract import MAX_PAGE_SIZE
from .storage import BACKENDS

_INT = {"type": "integer"}
_NUM = {"type": "number"}
_STR = {"type": "string"}
_SHA1 = {"type": "string", "pattern": "^[0-9a-f]{40}$"}
_TOKEN = {
    "type": "string",
    "pattern": "^[0-9a-f]{34}$",
    "description": "128 random bits and 2 hex digits naming the result shard",
}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_RESULT = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "song_id",
        "song_name",
        "input_total_hashes",
        "fingerprinted_hashes_in_db",
        "hashes_matched_in_input",
        "input_confidence",
        "fingerprinted_confidence",
        "offset",
        "offset_seconds",
        "blob_sha1",
        "confidence",
    ],
    "properties": {
        "song_id": _INT,
        "song_name": _STR,
        "input_total_hashes": {**_INT, "description": "hashes of the clip"},
        "fingerprinted_hashes_in_db": {**_INT, "description": "hashes stored for the song"},
        "hashes_matched_in_input": {**_INT, "description": "clip hashes agreeing on the winning offset"},
        "input_confidence": {**_NUM, "minimum": 0, "maximum": 1},
        "fingerprinted_confidence": {**_NUM, "minimum": 0, "maximum": 1},
        "offset": {
            **_INT,
            "description": "frames of 256/11025 s where the clip starts in the song, in the song's own time",
        },
        "offset_seconds": {**_NUM, "description": "where the clip starts in the song, seconds of the song's own time"},
        "blob_sha1": _SHA1,
        "confidence": {**_NUM, "minimum": 0, "maximum": 1, "description": "0.5 at the no-match bar"},
        "time_scale": {
            **_NUM,
            "description": "clip seconds per song second (> 1: the clip plays slower; 1.0 for an exact copy)",
        },
        "frequency_scale": {
            **_NUM,
            "description": "clip Hz per song Hz (> 1: the clip sounds higher; 1.0 for an exact copy)",
        },
    },
}
_RECOGNITION = {
    "type": "object",
    "required": ["status", "token", "results", "timings"],
    "properties": {
        "status": {"type": "string", "enum": ["success"]},
        "token": _TOKEN,
        "results": {
            "type": "array",
            "maxItems": 3,
            "items": _ref("Result"),
            "description": "best first; empty: not in the catalogue",
        },
        "timings": {"type": "object", "additionalProperties": _NUM, "description": "milliseconds per stage"},
        "degraded": {"type": "boolean", "description": "some fingerprint instances did not answer"},
        "instances_unanswered": _INT,
    },
}
_SONG = {
    "type": "object",
    "additionalProperties": False,
    "required": ["song_id", "song_name", "blob_sha1", "total_hashes", "duration", "instance", "created"],
    "properties": {
        "song_id": _INT,
        "song_name": _STR,
        "blob_sha1": _SHA1,
        "total_hashes": _INT,
        "duration": {**_NUM, "description": "seconds"},
        "instance": _INT,
        "created": {**_STR, "description": "UTC, ISO 8601"},
    },
}
_PART = {
    "type": "object",
    "required": ["index", "database_type", "status", "latency_ms"],
    "properties": {
        "index": _INT,
        "database_type": {"type": "string", "enum": sorted(BACKENDS)},
        "status": {"type": "string", "enum": ["up", "down"]},
        "latency_ms": {"type": "number", "nullable": True},
        "speed_pitch_robust": {
            "type": "boolean",
            "description": "fingerprint instances: holds the speed/tempo/pitch-robust family",
        },
        "triplet_keys": {
            "type": "boolean",
            "description": "fingerprint instances: its pair rows carry third points (a ClickHouse instance that was"
            " empty when this version first opened it)",
        },
        "peaks": {
            "type": "boolean",
            "description": "fingerprint instances: every song keeps its peaks (absent: the instance did not answer)",
        },
        "memory_loaded": {
            "type": "boolean",
            "description": "with recognizing.memory_index: the answering worker's copy of the instance's rows is "
            "in (until then the instance answers its lookups)",
        },
        "memory_rows": {**_INT, "description": "with recognizing.memory_index: the rows that copy holds"},
    },
}
_HEALTH = {
    "type": "object",
    "required": ["status", "params_digest", "instances", "results"],
    "properties": {
        "status": {"type": "string", "enum": ["ok"]},
        "params_digest": _STR,
        "speed_pitch_robust": {
            "oneOf": [{"type": "boolean"}, {"type": "string", "enum": ["partial"]}],
            "description": "the index recognises speed, tempo and pitch changes: on every instance, none, or some "
            "(an index made by 1.0 holds the pair family only: re-ingest the audio into a new index to add it)",
        },
        "triplet_keys": {
            "type": "boolean",
            "description": "every instance keeps third points: a clip's triplet keys are looked up first, and a "
            "clear clip is answered from their few rows (docs/SCALE.md)",
        },
        "peak_verification": {
            "oneOf": [{"type": "boolean"}, {"type": "string", "enum": ["partial"]}],
            "description": "every song keeps its peaks, so peak verification and the tempo fit reach it: on every "
            "instance that answered, none, or some (songs stored by an earlier release: `tunescout upgrade` gives "
            "them peaks from their stored rows)",
        },
        "instances": {"type": "array", "items": _ref("Part")},
        "results": {"type": "array", "items": _ref("Part")},
        "redis": {"type": "object", "properties": {"status": {"type": "string", "enum": ["up", "down"]}}},
        "degraded": {"type": "boolean"},
    },
}
_SEGMENT = {
    "type": "object",
    "required": [
        "song_id",
        "song_name",
        "start_seconds",
        "end_seconds",
        "song_start_seconds",
        "song_end_seconds",
        "confidence",
    ],
    "properties": {
        "type": {"type": "string", "enum": ["segment"]},
        "song_id": _INT,
        "song_name": _STR,
        "start_seconds": {**_NUM, "description": "where the play starts in the recording"},
        "end_seconds": {**_NUM, "description": "where it ends in the recording"},
        "song_start_seconds": {**_NUM, "description": "where in the song the play starts (the song's own time)"},
        "song_end_seconds": {**_NUM, "description": "where in the song it ends"},
        "confidence": {**_NUM, "minimum": 0, "maximum": 1, "description": "the best of its windows' recognitions"},
        "time_scale": {**_NUM, "description": "recording seconds per song second (> 1: played slower)"},
        "windows": {**_INT, "description": "windows of the recording that recognised it"},
    },
}
_SCAN = {
    "type": "object",
    "required": ["status", "token", "name", "state", "progress", "duration_seconds", "segments"],
    "properties": {
        "status": {"type": "string", "enum": ["success"]},
        "token": _TOKEN,
        "name": {**_STR, "description": "the form's name, else the uploaded file's name, else the URL"},
        "state": {"type": "string", "enum": ["queued", "running", "done", "failed", "cancelled"]},
        "progress": {
            **_NUM,
            "nullable": True,
            "minimum": 0,
            "maximum": 1,
            "description": "share of the recording analysed (null: a stream, or a file that claims no duration)",
        },
        "duration_seconds": {**_NUM, "description": "seconds of the recording analysed so far"},
        "total_seconds": {**_NUM, "nullable": True, "description": "the duration the recording claims"},
        "segments": {
            "type": "array",
            "items": _ref("Segment"),
            "description": "every play found so far, by start (a play still going on is added when it ends)",
        },
        "resumed": {
            **_INT,
            "description": "times the scan was started over because the process running it stopped",
        },
        "summary": {"type": "object", "description": "when done: windows, segments, elapsed time, speed"},
        "message": {**_STR, "description": "when failed: why"},
    },
}
_SHARED = {
    "type": "object",
    "required": ["start_seconds", "end_seconds", "other_start_seconds", "other_end_seconds", "aligned"],
    "properties": {
        "start_seconds": {**_NUM, "description": "where the shared audio starts in the song asked about"},
        "end_seconds": _NUM,
        "other_start_seconds": {**_NUM, "description": "where it starts in the other song"},
        "other_end_seconds": _NUM,
        "aligned": {**_INT, "description": "hashes of the song that agree on it"},
    },
}
_DUPLICATES = {
    "type": "object",
    "required": ["status", "song_id", "duplicates"],
    "properties": {
        "status": {"type": "string", "enum": ["success"]},
        "song_id": _INT,
        "duplicates": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["song_id", "song_name", "other_id", "other_name", "shared_seconds", "spans"],
                "properties": {
                    "song_id": _INT,
                    "song_name": _STR,
                    "other_id": _INT,
                    "other_name": _STR,
                    "shared_seconds": _NUM,
                    "spans": {"type": "array", "items": _SHARED},
                },
            },
        },
    },
}
_TOKEN_PATH = {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}
_ERROR = {
    "type": "object",
    "required": ["status", "message"],
    "properties": {"status": {"type": "string", "enum": ["error"]}, "message": _STR},
}
_FINGERPRINTED = {
    "type": "object",
    "required": ["status", "song_id", "song_name", "blob_sha1", "total_hashes"],
    "properties": {
        "status": {"type": "string", "enum": ["success"]},
        "song_id": _INT,
        "song_name": _STR,
        "blob_sha1": _SHA1,
        "total_hashes": _INT,
    },
}
_STATS = {
    "type": "object",
    "required": ["status", "songs", "hashes", "index_bytes", "instances", "results", "results_stored"],
    "properties": {
        "status": {"type": "string", "enum": ["success"]},
        "songs": _INT,
        "hashes": _INT,
        "index_bytes": _INT,
        "results_stored": _INT,
        "instances": {"type": "array", "items": {"type": "object"}},
        "results": {"type": "array", "items": {"type": "object"}},
    },
}
_PAGE = {
    "type": "object",
    "required": ["status", "songs", "next_cursor"],
    "properties": {
        "status": {"type": "string", "enum": ["success"]},
        "songs": {"type": "array", "items": _ref("Song")},
        "next_cursor": {"type": "string", "nullable": True, "pattern": "^[0-9]+$"},
        "degraded": {"type": "boolean"},
        "instances_unanswered": _INT,
    },
}

_E = {
    400: "Bad request (the message says what)",
    401: "Token missing or invalid",
    403: "Fingerprinting not allowed",
    404: "Not found",
    409: "Already fingerprinted",
    413: "File too large (checked before the body is read)",
    415: "Failed to process input file",
    422: "The audio cannot be used: longer than fingerprinting.max_duration, or too few hashes (silence)",
    429: "Too many requests (see the Retry-After header)",
    503: "Storage unavailable, or (POST /api/scan) the scan queue is full: see the Retry-After header",
}


def _err(*codes: int) -> dict:
    return {str(c): {"$ref": f"#/components/responses/E{c}"} for c in codes}


_UPLOAD = {"type": "string", "format": "binary"}
_BEARER = [{"bearer": []}]
_SONG_ID = {"name": "song_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}}

OPENAPI = {
    "openapi": "3.0.3",
    "info": {
        "title": "TuneScout",
        "version": __version__,
        "description": "Self-hosted music recognition. Every error is JSON "
        '{"status": "error", "message": ...} with its HTTP status.',
    },
    "servers": [{"url": "/"}],
    "paths": {
        "/api/recognize": {
            "post": {
                "summary": "Recognise a clip; the result is stored under the returned token",
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["file"],
                                "properties": {
                                    "file": _UPLOAD,
                                    "start": {"type": "number", "minimum": 0, "description": "seconds into the upload"},
                                    "duration": {
                                        "type": "number",
                                        "exclusiveMinimum": True,
                                        "minimum": 0,
                                        "description": "seconds to analyse (at most recognizing.max_duration)",
                                    },
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(_ref("Recognition"), "Recognised (results may be empty)"),
                    **_err(400, 413, 415, 429, 503),
                },
            }
        },
        "/api/fetch/{token}": {
            "get": {
                "summary": "The stored result of a recognition",
                "parameters": [{"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _json(_ref("Recognition"), "The result"), **_err(404, 429, 503)},
            }
        },
        "/api/fingerprint": {
            "post": {
                "summary": "Add a song: an audio/video file, or a fingerprint made by the client",
                "security": _BEARER,
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "file": _UPLOAD,
                                    "fingerprint": {
                                        **_UPLOAD,
                                        "description": "dejavu.pack_fingerprint bytes (docs/FORMAT.md) instead of file",
                                    },
                                    "name": {"type": "string", "description": "default: the file name's stem"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(_ref("Fingerprinted"), "Stored"),
                    **_err(400, 401, 403, 409, 413, 415, 422, 429, 503),
                },
            }
        },
        "/api/songs": {
            "get": {
                "summary": "The catalogue, one page at a time, by song id",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": 100},
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "schema": {"type": "string", "pattern": "^[0-9]{0,18}$"},
                        "description": "next_cursor of the previous page (absent or empty: the first)",
                    },
                ],
                "responses": {"200": _json(_ref("SongPage"), "A page"), **_err(400, 503)},
            }
        },
        "/api/songs/{song_id}": {
            "get": {
                "summary": "One song",
                "parameters": [_SONG_ID],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["status", "song"],
                            "properties": {"status": {"type": "string", "enum": ["success"]}, "song": _ref("Song")},
                        },
                        "The song",
                    ),
                    **_err(404, 503),
                },
            },
            "delete": {
                "summary": "Remove a song and its hashes",
                "security": _BEARER,
                "parameters": [_SONG_ID],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["status", "deleted"],
                            "properties": {"status": {"type": "string", "enum": ["success"]}, "deleted": _INT},
                        },
                        "Deleted",
                    ),
                    **_err(401, 403, 404, 503),
                },
            },
        },
        "/api/scan": {
            "post": {
                "summary": "Scan a long recording for every catalogued song in it; answered at once with the job",
                "description": "The job runs in the background (scanning.workers at once on a host, scanning.queue "
                "waiting); GET /api/scan/{token} follows it. The bearer token is needed unless "
                "scanning.require_token is false.",
                "security": _BEARER,
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "file": {**_UPLOAD, "description": "any recording FFmpeg reads"},
                                    "url": {
                                        **_STR,
                                        "description": "instead of file: a stream under one of scanning.allowed_urls",
                                    },
                                    "name": {**_STR, "maxLength": 255, "description": "a label for the job"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "202": _json(_ref("Scan"), "Queued (Location: its /api/scan/{token})"),
                    **_err(400, 401, 403, 413, 415, 503),
                },
            }
        },
        "/api/scan/{token}": {
            "get": {
                "summary": "A scan's state, progress and the segments found so far",
                "parameters": [_TOKEN_PATH],
                "responses": {"200": _json(_ref("Scan"), "The job"), **_err(404, 503)},
            },
            "delete": {
                "summary": "Cancel a scan (the segments found so far are kept; a finished scan is left as it is)",
                "security": _BEARER,
                "parameters": [_TOKEN_PATH],
                "responses": {"200": _json(_ref("Scan"), "The job, cancelled"), **_err(401, 404, 503)},
            },
        },
        "/api/duplicates": {
            "get": {
                "summary": "The songs that share audio with one song (re-encodes, edits, compilations), with the spans",
                "description": "From the index alone. The whole catalogue, pair by pair: `tunescout duplicates`.",
                "parameters": [{"name": "song_id", "in": "query", "required": True, "schema": _INT}],
                "responses": {"200": _json(_ref("Duplicates"), "Most shared first"), **_err(400, 404, 503)},
            }
        },
        "/api/stats": {
            "get": {
                "summary": "Songs, hashes and index bytes per instance; results stored",
                "responses": {"200": _json(_ref("Stats"), "Figures"), **_err(503)},
            }
        },
        "/api/health": {
            "get": {
                "summary": "Each instance, result shard and Redis: status and latency",
                "responses": {
                    "200": _json(_ref("Health"), "Serving (degraded: true when a part is down)"),
                    **_err(503),
                },
            }
        },
        "/api/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": _json({"type": "object"}, "OpenAPI 3.0")}}
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Result": _RESULT,
            "Recognition": _RECOGNITION,
            "Song": _SONG,
            "SongPage": _PAGE,
            "Part": _PART,
            "Health": _HEALTH,
            "Error": _ERROR,
            "Fingerprinted": _FINGERPRINTED,
            "Stats": _STATS,
            "Segment": _SEGMENT,
            "Scan": _SCAN,
            "Duplicates": _DUPLICATES,
        },
        "responses": {f"E{c}": _json(_ref("Error"), text) for c, text in _E.items()},
    },
}
