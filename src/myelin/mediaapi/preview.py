"""URL previews: `GET /_matrix/client/v1/media/preview_url` (and the legacy v3 path).

Clients such as Element ask for a preview of every link they show, so the server fetches
URLs that any user names. That makes each fetch a server-side request forgery risk, and
the guards here are the point of this module:

- only `http`/`https`; at most `max_redirects` redirects, followed here (not by aiohttp)
  so that every hop is checked again;
- the address of every hop is checked against an IP blacklist (loopback, private,
  link-local, multicast, reserved... by default) minus a whitelist: IP literals before
  connecting, host names on their resolved addresses inside the connector's resolver (so
  the address checked is the address connected to; a name that resolves to any blocked
  address is refused whole, as a DNS answer mixing public and private addresses is an
  attack, not an accident);
- bodies are streamed and cut at `max_size` (after decompression), with one total timeout.

Pages are parsed with the standard library's `html.parser` for OpenGraph `og:*` tags,
with `<title>`, the meta description and the first `<img>` as fallbacks. Images (a URL
that is an image, or a page's `og:image`) are stored in the media repository and named by
their `mxc://` URI with size, type and dimensions. Other content previews as `{}`.

Answers are cached for an hour, in memory and in the database (`url_previews`), so all
the clients showing one link cost one fetch; failures are remembered in memory for a
minute. `ts` may ask for an older version, but the spec lets a server answer with a newer
one, and this server keeps only fresh previews.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ipaddress
import logging
import re
import socket
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any

import orjson
from yarl import URL

from myelin.clientapi.http import MatrixError, invalid_param, missing_param
from myelin.mediaapi import thumbnails as thumbs
from myelin.mediaapi.repository import MediaRepository
from myelin.storage import Database, Txn

# aiohttp (about 11 MB resident) is imported on the first preview, not at start-up: a
# server whose users never preview a link does not pay for it.
if TYPE_CHECKING:
    import aiohttp
    from aiohttp.abc import AbstractResolver

log = logging.getLogger("myelin.media.preview")

HOUR_MS = 60 * 60 * 1000
#: Ranges no preview may reach unless whitelisted: IANA special-purpose addresses that
#: are not the public internet (RFC 6890 and its updates), and the IPv6 forms that embed
#: an IPv4 address a router could translate (6to4, NAT64).
DEFAULT_IP_RANGE_BLACKLIST: tuple[str, ...] = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_CHUNK = 64 * 1024
#: Longest URL accepted (browsers and Synapse stop around here too).
MAX_URL_LENGTH = 4096
#: Bounds on what a page can put into an answer.
_MAX_TAGS = 64
_MAX_VALUE = 2048
_MAX_DESCRIPTION = 500
_MEMORY_ENTRIES = 1024
_ERROR_TTL_MS = 60_000


@dataclass(frozen=True, slots=True)
class PreviewSettings:
    """The knobs of previews; `blacklist`/`whitelist` are CIDR ranges (or addresses)."""

    enabled: bool = True
    blacklist: tuple[str, ...] = DEFAULT_IP_RANGE_BLACKLIST
    whitelist: tuple[str, ...] = ()
    max_size: int = 10 * 1024 * 1024
    timeout_s: float = 20.0
    max_redirects: int = 5
    cache_ms: int = HOUR_MS
    user_agent: str = "Myelin (URL preview; +https://matrix.org)"


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text.strip(), strict=False)


class AddressPolicy:
    """Which IP addresses previews may connect to: whitelisted, or not blacklisted."""

    def __init__(self, blacklist: Iterable[str], whitelist: Iterable[str]) -> None:
        self.blacklist = tuple(_network(r) for r in blacklist)
        self.whitelist = tuple(_network(r) for r in whitelist)

    def allowed(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        forms: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            forms.append(ip.ipv4_mapped)  # ::ffff:127.0.0.1 is 127.0.0.1
        if any(f in net for f in forms for net in self.whitelist):
            return True
        return not any(f in net for f in forms for net in self.blacklist)


class BlockedAddress(Exception):
    """A hop of a preview would connect to a refused address (not an OSError, so that
    aiohttp lets it through its connector unchanged)."""

    def __init__(self, host: str, address: str) -> None:
        super().__init__(f"{host} resolves to {address}, which previews may not reach")
        self.host = host
        self.address = address


def _guarded_resolver(policy: AddressPolicy) -> AbstractResolver:
    """The default resolver, refusing any answer that holds a blocked address."""
    from aiohttp.abc import AbstractResolver, ResolveResult
    from aiohttp.resolver import DefaultResolver

    class GuardedResolver(AbstractResolver):
        def __init__(self) -> None:
            self._inner = DefaultResolver()

        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            results = await self._inner.resolve(host, port, family)
            for result in results:
                if not policy.allowed(result["host"]):
                    raise BlockedAddress(host, result["host"])
            return results

        async def close(self) -> None:
            await self._inner.close()

    return GuardedResolver()


def _forbidden(exc: BlockedAddress) -> MatrixError:
    return MatrixError(403, "M_FORBIDDEN", f"URL previews may not reach {exc.address}")


def fetch_failed(reason: str) -> MatrixError:
    return MatrixError(502, "M_UNKNOWN", f"Failed to fetch the URL: {reason}")


def _too_large(limit: int) -> MatrixError:
    return MatrixError(502, "M_TOO_LARGE", f"The content is larger than {limit} bytes")


def _blocked_in(exc: BaseException) -> BlockedAddress | None:
    """The BlockedAddress an aiohttp error was raised from, if any."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, BlockedAddress):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def parse_url(text: str | None) -> URL:
    """The `url` parameter as an absolute http(s) URL, or a 400."""
    if text is None or text == "":
        raise missing_param("Missing query parameter 'url'")
    if len(text) > MAX_URL_LENGTH:
        raise invalid_param(f"'url' is longer than {MAX_URL_LENGTH} characters")
    try:
        url = URL(text)
        host = url.raw_host
    except (ValueError, TypeError):
        raise invalid_param("'url' is not a valid URL") from None
    if url.scheme not in ("http", "https") or not host:
        raise invalid_param("'url' must be an absolute http or https URL")
    return url.with_fragment(None)


@dataclass(frozen=True, slots=True)
class CachedPreview:
    """A preview (or, in memory only, a remote failure) and until when it answers."""

    fetched_ts: int
    expires_ts: int
    og: dict[str, Any] | None
    error: MatrixError | None = None


class PreviewStore:
    """The `url_previews` table (created by the media migrations)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, url: str, now_ms: int) -> CachedPreview | None:
        async def txn(t: Txn) -> CachedPreview | None:
            row = await t.fetchone(
                "SELECT fetched_ts, expires_ts, og FROM url_previews"
                " WHERE url = ? AND expires_ts > ? ORDER BY fetched_ts DESC LIMIT 1",
                url,
                now_ms,
            )
            if row is None:
                return None
            return CachedPreview(int(row[0]), int(row[1]), orjson.loads(row[2]))

        return await self.db.read(txn)

    async def put(self, url: str, entry: CachedPreview) -> None:
        async def txn(t: Txn) -> None:
            # Expired versions of every URL are useless: drop them on the way.
            await t.execute("DELETE FROM url_previews WHERE expires_ts <= ?", entry.fetched_ts)
            await t.execute(
                "INSERT INTO url_previews (url, fetched_ts, expires_ts, og) VALUES (?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                url,
                entry.fetched_ts,
                entry.expires_ts,
                orjson.dumps(entry.og).decode(),
            )

        await self.db.run(txn)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _answer(entry: CachedPreview) -> dict[str, Any]:
    if entry.error is not None:  # a fresh exception each time, not one shared traceback
        raise MatrixError(entry.error.status, entry.error.errcode, entry.error.error)
    assert entry.og is not None
    return entry.og


class UrlPreviewer:
    """Fetches, parses, stores and caches previews for one server."""

    def __init__(
        self,
        repo: MediaRepository,
        db: Database,
        settings: PreviewSettings,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self.repo = repo
        self.store = PreviewStore(db)
        self.settings = settings
        self.policy = AddressPolicy(settings.blacklist, settings.whitelist)
        self.clock = clock
        self._memory: OrderedDict[str, CachedPreview] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[dict[str, Any]]] = {}

    # --- the cache ----------------------------------------------------------------------

    async def preview(self, url: URL, user_id: str) -> dict[str, Any]:
        """The OpenGraph answer for `url`: cached, or fetched once for all who ask at once.

        The first asker of an uncached URL owns the lookup (database, then fetch); the
        others wait on its future rather than fetching the same page again."""
        key = str(url)
        while True:
            entry = self._memory.get(key)
            if entry is not None and entry.expires_ts > self.clock():
                return _answer(entry)
            running = self._inflight.get(key)
            if running is None:
                break
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                if not running.cancelled():
                    raise  # this request itself was cancelled
                # The request that owned the lookup went away: look again.
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            og = await self._lookup(key, url, user_id)
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        except BaseException:
            future.cancel()
            raise
        else:
            future.set_result(og)
            return og
        finally:
            del self._inflight[key]

    async def _lookup(self, key: str, url: URL, user_id: str) -> dict[str, Any]:
        entry = await self.store.get(key, self.clock())
        if entry is not None:
            self._remember(key, entry)
            return _answer(entry)
        return await self._fetch_and_remember(key, url, user_id)

    def _remember(self, key: str, entry: CachedPreview) -> None:
        self._memory[key] = entry
        self._memory.move_to_end(key)
        while len(self._memory) > _MEMORY_ENTRIES:
            self._memory.popitem(last=False)

    async def _fetch_and_remember(self, key: str, url: URL, user_id: str) -> dict[str, Any]:
        now = self.clock()
        try:
            og = await self._build(url, user_id)
        except MatrixError as exc:
            log.info("preview of %s refused: %s", key, exc)
            if exc.status >= 500:  # the remote's fault: don't ask it again for a minute
                self._remember(key, CachedPreview(now, now + _ERROR_TTL_MS, None, exc))
            raise
        log.info("preview of %s: %d fields", key, len(og))
        entry = CachedPreview(now, now + self.settings.cache_ms, og)
        self._remember(key, entry)
        await self.store.put(key, entry)
        return og

    # --- fetching -----------------------------------------------------------------------

    def _check_hop(self, url: URL) -> None:
        if url.scheme not in ("http", "https") or not url.raw_host:
            raise fetch_failed(f"unsupported redirect target {url.scheme}://")
        host = url.raw_host
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return  # a name: checked on its resolved addresses by the resolver
        if not self.policy.allowed(host):
            raise _forbidden(BlockedAddress(host, host))

    @contextlib.asynccontextmanager
    async def _open(self, url: URL) -> AsyncIterator[tuple[URL, aiohttp.ClientResponse]]:
        """GET `url`, following redirects hop by hop; yields the final URL and response."""
        import aiohttp

        resolver = _guarded_resolver(self.policy)
        connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, limit=4)
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_s)
        headers = {"User-Agent": self.settings.user_agent, "Accept-Language": "en"}
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(resolver.close)  # after the session (and connector)
            session = await stack.enter_async_context(
                aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers)
            )
            current = url
            for _ in range(self.settings.max_redirects + 1):
                self._check_hop(current)
                try:
                    resp = await session.get(current, allow_redirects=False)
                except (aiohttp.ClientError, TimeoutError, BlockedAddress, OSError) as exc:
                    blocked = _blocked_in(exc)
                    if blocked is not None:
                        raise _forbidden(blocked) from None
                    raise fetch_failed(type(exc).__name__) from None
                try:
                    location = resp.headers.get("Location")
                    if resp.status in _REDIRECTS and location:
                        try:
                            current = current.join(URL(location)).with_fragment(None)
                        except ValueError:
                            raise fetch_failed("invalid redirect location") from None
                        continue
                    if not 200 <= resp.status < 300:
                        raise fetch_failed(f"the server answered {resp.status}")
                    yield current, resp
                    return
                finally:
                    resp.release()
            raise fetch_failed(f"more than {self.settings.max_redirects} redirects")

    async def _chunks(self, resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """The body, cut at `max_size` (a declared length over it is refused up front)."""
        import aiohttp

        limit = self.settings.max_size
        if resp.content_length is not None and resp.content_length > limit:
            raise _too_large(limit)
        size = 0
        try:
            async for chunk in resp.content.iter_chunked(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise fetch_failed(f"{type(exc).__name__} while reading") from None

    async def _build(self, url: URL, user_id: str) -> dict[str, Any]:
        async with self._open(url) as (final, resp):
            ctype = resp.content_type.lower()
            if ctype.startswith("image/"):
                return await self._store_image(resp, final, user_id)
            if ctype not in _HTML_TYPES:
                return {}  # previewable types only; the body is never read
            body = b"".join([chunk async for chunk in self._chunks(resp)])
            header_charset = resp.charset
        page = await asyncio.to_thread(parse_html, body, header_charset)
        og = page.open_graph()
        image = og.pop("og:image", None)
        if image is not None:
            for name in [k for k in og if k.startswith("og:image:")]:
                del og[name]  # the page's claims about its image; ours replace them
            og.update(await self._page_image(final, image, user_id))
        return og

    async def _page_image(self, page: URL, image: str, user_id: str) -> dict[str, Any]:
        """A page's image fetched (with the same guards) into the media repository; no
        image at all when that fails: a preview without a picture beats no preview."""
        try:
            target = page.join(URL(image.strip())).with_fragment(None)
        except ValueError:
            return {}
        if target.scheme not in ("http", "https"):
            return {}
        try:
            async with self._open(target) as (final, resp):
                if not resp.content_type.lower().startswith("image/"):
                    return {}
                return await self._store_image(resp, final, user_id)
        except MatrixError as exc:
            log.info("preview image %s of %s not kept: %s", target, page, exc)
            return {}

    async def _store_image(
        self, resp: aiohttp.ClientResponse, url: URL, user_id: str
    ) -> dict[str, Any]:
        ctype = resp.content_type.lower()
        try:
            uri = await self.repo.upload(user_id, ctype, None, self._chunks(resp), None)
        except MatrixError as exc:
            if exc.errcode == "M_TOO_LARGE":  # our cap or the repository's, the smaller
                limit = min(self.settings.max_size, self.repo.limits.max_upload_size)
                raise _too_large(limit) from None
            if exc.status < 500:  # e.g. a content type the repository refuses
                raise fetch_failed(f"unusable content ({exc.error})") from None
            raise
        media_id = uri.rsplit("/", 1)[1]
        record = await self.repo.store.get(media_id)
        og: dict[str, Any] = {"og:image": uri, "og:image:type": ctype}
        if record is not None and record.size is not None:
            og["matrix:image:size"] = record.size
        try:
            info = await asyncio.to_thread(thumbs.probe, self.repo.files.media_path(media_id))
        except (thumbs.NotAnImage, thumbs.ImageTooLarge):
            return og
        og["og:image:width"] = info.width
        og["og:image:height"] = info.height
        return og


# --- HTML -------------------------------------------------------------------------------

_META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.I)
_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9_.:\-]+)""", re.I)
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))  # fmt: skip


def detect_charset(body: bytes, header_charset: str | None) -> str:
    """The encoding of an HTML body: byte-order mark, then the Content-Type header, then a
    `<meta charset>` (or http-equiv) or XML declaration near the start, then UTF-8."""
    candidates: list[str] = [name for bom, name in _BOMS if body.startswith(bom)]
    if header_charset:
        candidates.append(header_charset)
    head = body[:4096]
    for pattern in (_META_CHARSET, _XML_ENCODING):
        found = pattern.search(head)
        if found:
            candidates.append(found.group(1).decode("ascii"))
    for name in candidates:
        try:
            return codecs.lookup(name.strip()).name
        except LookupError:
            continue
    return "utf-8"


class _OpenGraphParser(HTMLParser):
    """Collects og:* meta tags, the title, the meta description and the first image."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.og: dict[str, str] = {}
        self.title: str | None = None
        self.description: str | None = None
        self.first_image: str | None = None
        self._title_parts: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v for k, v in attrs if v is not None}
        if tag == "meta":
            key = (values.get("property") or values.get("name") or "").strip()
            content = values.get("content")
            if not key or content is None:
                return
            if key.lower().startswith("og:") and len(self.og) < _MAX_TAGS:
                self.og.setdefault(key, content.strip()[:_MAX_VALUE])
            elif key.lower() == "description" and self.description is None:
                self.description = content.strip()
        elif tag == "title" and self.title is None and self._title_parts is None:
            self._title_parts = []
        elif tag == "img" and self.first_image is None and values.get("src"):
            self.first_image = values["src"]

    def handle_data(self, data: str) -> None:
        if self._title_parts is not None:
            self._title_parts.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._title_parts is not None:
            self.title = " ".join("".join(self._title_parts).split())[:_MAX_VALUE]
            self._title_parts = None


@dataclass(frozen=True, slots=True)
class ParsedPage:
    og: dict[str, str]
    title: str | None
    description: str | None
    first_image: str | None

    def open_graph(self) -> dict[str, Any]:
        """The page's og:* tags, with the fallbacks where a tag is missing."""
        og: dict[str, Any] = dict(self.og)
        if "og:title" not in og and self.title:
            og["og:title"] = self.title
        if "og:description" not in og and self.description:
            og["og:description"] = self.description[:_MAX_DESCRIPTION]
        if "og:image" not in og and self.first_image:
            og["og:image"] = self.first_image
        return {k: v for k, v in og.items() if v != ""}


def parse_html(body: bytes, header_charset: str | None = None) -> ParsedPage:
    """Parse a page (blocking, CPU-bound: run it in a thread)."""
    text = body.decode(detect_charset(body, header_charset), errors="replace")
    parser = _OpenGraphParser()
    try:
        parser.feed(text)
        parser.close()
    except Exception:  # html.parser copes with almost anything; keep what was found
        log.debug("HTML parser gave up part-way", exc_info=True)
    return ParsedPage(parser.og, parser.title, parser.description, parser.first_image)
