"""Blueprint "api": parse the request, call one engine method, send its record's JSON body."""

from __future__ import annotations

from pathlib import PurePath

from flask import Blueprint, current_app, jsonify, request
from werkzeug import formparser
from werkzeug.sansio.multipart import MultipartDecoder

from . import metrics
from .auth import bearer_matches
from .engine import Engine, safe_song_name
from .errors import BadRequestError, ForbiddenError, PayloadTooLargeError, StorageError, UnauthorizedError
from .openapi import OPENAPI
from .scanjobs import ScanJobs

bp = Blueprint("api", __name__, url_prefix="/api")
MB = 1024 * 1024
MAX_NAME = 255  # characters of a scan's name kept


class LenientPartHeaders(MultipartDecoder):
    """Multipart part headers that are not UTF-8 are read as Latin-1 instead of failing.

    Clients send a file name in their own code page; werkzeug's UTF-8 decoding then fails, and it
    drops the whole form without a word, so the upload was answered "No file part". The file name is
    made safe afterwards (safe_song_name), whatever it decodes to.
    """

    def _parse_headers(self, data):
        try:
            data.decode()
        except UnicodeDecodeError:
            data = data.decode("latin-1").encode()
        return super()._parse_headers(data)


formparser.MultipartDecoder = LenientPartHeaders  # werkzeug's form parser makes its decoder by this name


def current_engine() -> Engine:
    return current_app.extensions["tunescout"]


def current_scans() -> ScanJobs:
    return current_app.extensions["tunescout_scans"]


def require_file(max_bytes: int):
    """The multipart ``file`` of the request, its size checked before the body is read.

    Raises:
        PayloadTooLargeError: the declared body is larger than max_bytes.
        BadRequestError: there is no file part.
    """
    check_size(max_bytes)
    upload = request.files.get("file")
    if upload is None:
        raise BadRequestError("No file part in the request")
    return upload


def check_size(max_bytes: int) -> bool:
    """Refuse a declared body over max_bytes before reading it; cut undeclared ones there.

    Raises:
        PayloadTooLargeError: the declared body is larger than max_bytes.
    """
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise PayloadTooLargeError(limit_bytes=max_bytes, received_bytes=declared)
    request.max_content_length = max_bytes
    return True


def form_seconds(name: str) -> float | None:
    """An optional form field in seconds.

    Raises:
        BadRequestError: present but not a finite number.
    """
    value = request.form.get(name, "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise BadRequestError(f"'{name}' must be a number of seconds") from None
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise BadRequestError(f"'{name}' must be a number of seconds")
    return seconds


@bp.post("/recognize")
def recognize():
    engine = current_engine()
    upload = require_file(int(engine.config.recognizing.max_file_size_mb * MB))
    start, duration = form_seconds("start"), form_seconds("duration")
    body = engine.recognize(upload.read(), start or 0.0, duration).body()
    metrics.recognised(body)
    return jsonify(body)


@bp.get("/fetch/<token>")
def fetch(token: str):
    return jsonify(current_engine().fetch(token))


def require_writer(engine: Engine) -> None:
    """Writes must be allowed and carry the bearer token.

    Raises:
        ForbiddenError: fingerprinting.allow is false.
        UnauthorizedError: the token is missing or wrong (compared in constant time).
    """
    if not engine.config.fingerprinting.allow:
        raise ForbiddenError()
    require_token()


def require_token() -> None:
    """The request carries the write token as its bearer.

    Raises:
        UnauthorizedError: the token is missing or wrong (compared in constant time).
    """
    if not bearer_matches(request.headers.get("Authorization"), current_app.config["WRITE_TOKEN"]):
        raise UnauthorizedError()


def query_int(name: str, default: int) -> int:
    """An optional integer query parameter.

    Raises:
        BadRequestError: present but not an integer.
    """
    if name not in request.args:
        return default
    try:
        return int(request.args[name])
    except ValueError:
        raise BadRequestError(f"'{name}' must be an integer") from None


@bp.post("/fingerprint")
def fingerprint():
    engine = current_engine()
    require_writer(engine)
    limit = int(engine.config.fingerprinting.max_file_size_mb * MB)
    packed = request.files.get("fingerprint") if check_size(limit) else None
    if packed is not None:  # fingerprinted by the client: hashes only (dejavu.pack_fingerprint)
        name = request.form.get("name") or PurePath(packed.filename or "").stem
        body = engine.fingerprint_packed(packed.read(limit + 1), name).body()
    else:
        upload = require_file(limit)
        name = request.form.get("name") or PurePath(upload.filename or "").stem
        body = engine.fingerprint(upload.stream, safe_song_name(name)).body()
    metrics.ingested(body)
    return jsonify(body)


@bp.post("/scan")
def start_scan():
    scans = current_scans()
    if scans.config.require_token:
        require_token()
    check_size(int(scans.config.max_file_size_mb * MB))
    url = request.form.get("url", "").strip()
    name = request.form.get("name", "").strip()[:MAX_NAME]
    if url:
        if not scans.url_allowed(url):
            raise ForbiddenError("This URL is not under any of scanning.allowed_urls")
        body = scans.submit_url(url, name)
    else:
        upload = require_file(int(scans.config.max_file_size_mb * MB))
        body = scans.submit(upload.stream, name or PurePath(upload.filename or "").name[:MAX_NAME])
    response = jsonify({"status": "success", **body})
    response.headers["Location"] = f"/api/scan/{body['token']}"
    return response, 202


@bp.get("/scan/<token>")
def scan_state(token: str):
    return jsonify({"status": "success", **current_scans().status(token)})


@bp.delete("/scan/<token>")
def cancel_scan(token: str):
    scans = current_scans()
    if scans.config.require_token:
        require_token()
    return jsonify({"status": "success", **scans.cancel(token)})


@bp.get("/health")
def health():
    health = current_engine().health()
    body = health.body()
    if not health.serving:
        raise StorageError("No storage answers", **{k: v for k, v in body.items() if k != "status"})
    return jsonify(body)


@bp.get("/songs")
def list_songs():
    return jsonify(current_engine().list_songs(query_int("limit", 100), request.args.get("cursor")).body())


@bp.get("/songs/<int:song_id>")
def get_song(song_id: int):
    return jsonify(current_engine().get_song(song_id).body())


@bp.delete("/songs/<int:song_id>")
def delete_song(song_id: int):
    engine = current_engine()
    require_writer(engine)
    body = engine.delete_song(song_id).body()
    metrics.SONGS_DELETED.inc()
    return jsonify(body)


@bp.get("/duplicates")
def duplicates():
    if "song_id" not in request.args:
        raise BadRequestError("'song_id' is required (the whole catalogue: `tunescout duplicates`)")
    song_id = query_int("song_id", 0)
    found = current_engine().duplicates(song_id)
    return jsonify({"status": "success", "song_id": song_id, "duplicates": [d.body() for d in found]})


@bp.get("/stats")
def stats():
    return jsonify(current_engine().stats().body())


@bp.get("/openapi.json")
def openapi():
    return jsonify(OPENAPI)
