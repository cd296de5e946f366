"""HTTP endpoints of the content repository (client-server API, content_repo.md).

- `POST /_matrix/media/v3/upload`, `POST /_matrix/media/v1/create`,
  `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`: uploads; their bodies are
  streamed (route `stream=True`), never buffered whole.
- `GET /_matrix/client/v1/media/{download,thumbnail,config,preview_url}/...`: the authenticated
  endpoints of Matrix 1.11, and the deprecated unauthenticated `/_matrix/media/v3/...`
  ones (still served: this server has not "frozen" them).

Downloads and thumbnails are streamed out of their files with the spec's
Content-Disposition, Content-Security-Policy and Cross-Origin-Resource-Policy headers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from myelin.clientapi.http import (
    MatrixError,
    Request,
    Response,
    invalid_param,
    json_response,
    missing_param,
)
from myelin.clientapi.router import Router
from myelin.mediaapi.headers import BadHeaderValue, check_filename, media_headers
from myelin.mediaapi.preview import UrlPreviewer, parse_url
from myelin.mediaapi.repository import MediaRepository, Served
from myelin.mediaapi.thumbnails import METHODS, Method

LEGACY_PREFIXES = ("/_matrix/media/v3", "/_matrix/media/r0")
AUTHED_PREFIX = "/_matrix/client/v1/media"
CREATE_PATH = "/_matrix/media/v1/create"
#: Thumbnail dimensions beyond this are nonsense, not a bigger thumbnail.
MAX_DIMENSION = 100_000


class ClientDisconnected(MatrixError):
    def __init__(self) -> None:
        super().__init__(400, "M_UNKNOWN", "Client disconnected during the upload")


async def request_body(req: Request) -> AsyncIterator[bytes]:
    """The request body as chunks, straight from the ASGI channel when the route streams."""
    if req.receive is None:
        if req.body:
            yield req.body
        return
    while True:
        message = await req.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def declared_length(req: Request) -> int | None:
    value = req.headers.get("content-length")
    if value is None:
        return None
    if not value.strip().isdigit():
        raise invalid_param("Content-Length must be a non-negative integer")
    return int(value)


def _int_param(req: Request, name: str, *, required: bool) -> int | None:
    value = req.query_param(name)
    if value is None or value == "":
        if required:
            raise missing_param(f"Missing query parameter '{name}'")
        return None
    try:
        number = int(value)
    except ValueError:
        raise invalid_param(f"'{name}' must be an integer") from None
    return number


def _bool_param(req: Request, name: str, default: bool) -> bool:
    value = req.query_param(name)
    if value is None:
        return default
    if value.lower() == "true":
        return True
    if value.lower() == "false":
        return False
    raise invalid_param(f"'{name}' must be true or false")


def _timeout_ms(req: Request) -> int | None:
    timeout = _int_param(req, "timeout_ms", required=False)
    if timeout is not None and timeout < 0:
        raise invalid_param("'timeout_ms' must not be negative")
    # Accepted and checked; without federation there is no remote fetch to allow.
    _bool_param(req, "allow_remote", True)
    # Accepted and checked; this server never redirects, so it always sends the content.
    _bool_param(req, "allow_redirect", False)
    return timeout


def _served(served: Served, filename: str | None, *, inline: bool = False) -> Response:
    return Response(
        200,
        b"",
        content_type=served.content_type.encode("latin-1"),
        headers=media_headers(served.content_type, filename, served.size, inline=inline),
        stream=served.stream,
    )


class MediaRoutes:
    def __init__(self, repo: MediaRepository, previews: UrlPreviewer | None = None) -> None:
        self.repo = repo
        self.previews = previews

    async def upload(self, req: Request) -> Response:
        uri = await self.repo.upload(
            req.user().user_id,
            req.headers.get("content-type"),
            req.query_param("filename"),
            request_body(req),
            declared_length(req),
        )
        return json_response({"content_uri": uri})

    async def create(self, req: Request) -> Response:
        uri, expires = await self.repo.create(req.user().user_id)
        return json_response({"content_uri": uri, "unused_expires_at": expires})

    async def upload_to(self, req: Request) -> Response:
        await self.repo.upload_to(
            req.user().user_id,
            req.params["serverName"],
            req.params["mediaId"],
            req.headers.get("content-type"),
            req.query_param("filename"),
            request_body(req),
            declared_length(req),
        )
        return json_response({})

    async def download(self, req: Request) -> Response:
        override = req.params.get("fileName")
        if override is not None:
            try:
                override = check_filename(override)
            except BadHeaderValue as exc:
                raise invalid_param(str(exc)) from None
        record = await self.repo.find(
            req.params["serverName"], req.params["mediaId"], _timeout_ms(req)
        )
        filename = override if override is not None else record.upload_name
        return _served(await self.repo.open_content(record), filename)

    async def thumbnail(self, req: Request) -> Response:
        width = _int_param(req, "width", required=True)
        height = _int_param(req, "height", required=True)
        assert width is not None and height is not None
        if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
            raise invalid_param(f"'width' and 'height' must be between 1 and {MAX_DIMENSION}")
        method = req.query_param("method") or "scale"
        if method not in METHODS:
            raise invalid_param("'method' must be 'crop' or 'scale'")
        animated = _bool_param(req, "animated", False)
        record = await self.repo.find(
            req.params["serverName"], req.params["mediaId"], _timeout_ms(req)
        )
        chosen: Method = "crop" if method == "crop" else "scale"
        served = await self.repo.thumbnail(record, width, height, chosen, animated)
        extension = "jpg" if served.content_type == "image/jpeg" else served.content_type[6:]
        return _served(served, f"thumbnail.{extension}", inline=True)

    async def config(self, req: Request) -> Response:
        return json_response({"m.upload.size": self.repo.limits.max_upload_size})

    async def preview_url(self, req: Request) -> Response:
        if self.previews is None or not self.previews.settings.enabled:
            raise MatrixError(404, "M_UNRECOGNIZED", "URL previews are disabled on this server")
        url = parse_url(req.query_param("url"))
        _int_param(req, "ts", required=False)  # checked; any fresh preview answers it
        return json_response(await self.previews.preview(url, req.user().user_id))


def install(
    router: Router, repo: MediaRepository, previews: UrlPreviewer | None = None
) -> MediaRoutes:
    routes = MediaRoutes(repo, previews)
    legacy = LEGACY_PREFIXES
    router.add("POST", [f"{p}/upload" for p in legacy], routes.upload, auth=True, stream=True)
    router.add(
        "PUT",
        [f"{p}/upload/{{serverName}}/{{mediaId}}" for p in legacy],
        routes.upload_to,
        auth=True,
        stream=True,
    )
    router.add("POST", CREATE_PATH, routes.create, auth=True, ratelimit=True)
    for prefix, auth in [(AUTHED_PREFIX, True), *((p, False) for p in legacy)]:
        router.add(
            "GET",
            [
                f"{prefix}/download/{{serverName}}/{{mediaId}}",
                f"{prefix}/download/{{serverName}}/{{mediaId}}/{{fileName}}",
            ],
            routes.download,
            auth=auth,
            allow_guest=True,
        )
        router.add(
            "GET",
            f"{prefix}/thumbnail/{{serverName}}/{{mediaId}}",
            routes.thumbnail,
            auth=auth,
            allow_guest=True,
        )
        router.add("GET", f"{prefix}/config", routes.config, auth=True, allow_guest=True)
        router.add("GET", f"{prefix}/preview_url", routes.preview_url, auth=True)
    return routes
