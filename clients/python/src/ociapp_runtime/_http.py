"""HTTP to the runtime daemon, through aiohttp: its management calls,
uploads (streamed from the file, behind ``Expect: 100-continue``) and, for
a daemon without the execute channel, executes. Connections are kept alive,
over a Unix socket or TCP (with TLS).
"""

import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

__all__ = ["Address", "Client", "Response", "parse_url"]



@dataclass(frozen=True, slots=True)
class Address:
    """Where the daemon listens: a Unix socket path, or a TCP host and port."""

    unix_path: str | None = None
    host: str | None = None
    port: int | None = None
    tls: bool = False

    @property
    def host_header(self) -> str:
        if self.unix_path is not None:
            return "ociapp-runtime"
        host = self.host or ""
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        if self.unix_path is not None:
            return f"unix://{self.unix_path}"
        return f"{'https' if self.tls else 'http'}://{self.host_header}"


def parse_url(url: str) -> Address:
    """Parses unix:///PATH, tcp://HOST:PORT, http://HOST:PORT or https://HOST:PORT."""

    if url.startswith("unix://"):
        path = url[len("unix://") :]
        if not path.startswith("/"):
            raise ValueError(f"daemon URL {url!r}: expected unix:///ABSOLUTE/PATH")
        return Address(unix_path=path)
    parts = urlsplit(url)
    if parts.scheme not in {"tcp", "http", "https"} or not parts.hostname:
        raise ValueError(
            f"daemon URL {url!r}: use unix:///PATH, tcp://HOST:PORT, "
            "http://HOST:PORT or https://HOST:PORT"
        )
    if parts.path not in {"", "/"}:
        raise ValueError(f"daemon URL {url!r}: expected no path")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    return Address(host=parts.hostname, port=port, tls=tls)


@dataclass(slots=True)
class Response:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


class Client:
    """Sends requests to one daemon on one aiohttp session, which keeps
    connections alive for reuse."""

    def __init__(self, address: Address, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.address = address
        self._ssl = ssl_context
        if address.tls and self._ssl is None:
            self._ssl = ssl.create_default_context()
        self._session: aiohttp.ClientSession | None = None
        self._base = "http://ociapp-runtime" if address.unix_path is not None else str(address)

    def _get_session(self) -> aiohttp.ClientSession:
        # Made on first use, inside the running event loop.
        if self._session is None:
            connector: aiohttp.BaseConnector
            if self.address.unix_path is not None:
                connector = aiohttp.UnixConnector(path=self.address.unix_path)
            else:
                connector = aiohttp.TCPConnector(ssl=self._ssl if self.address.tls else False)
            # The daemon closes idle connections after two minutes; aiohttp
            # retries a request whose kept-alive connection turns out closed.
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        body_file: Path | None = None,
        expect_continue: bool = False,
    ) -> Response:
        """Sends one request and reads the whole response. Connection
        failures raise ``OSError`` (aiohttp's ``ClientError``s are turned
        into ``ConnectionError``)."""

        session = self._get_session()
        try:
            if body_file is not None:
                with body_file.open("rb") as f:
                    hdrs = {**(headers or {}), "Content-Length": str(body_file.stat().st_size)}
                    return await self._exchange(session, method, path, hdrs, f, expect_continue)
            return await self._exchange(session, method, path, headers or {}, body, expect_continue)
        except aiohttp.ClientError as exc:
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc

    async def _exchange(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        headers: dict[str, str],
        data: object,
        expect_continue: bool,
    ) -> Response:
        async with session.request(
            method, self._base + path, headers=headers, data=data, expect100=expect_continue, allow_redirects=False
        ) as resp:
            content = await resp.read()
            return Response(
                status=resp.status,
                reason=resp.reason or "",
                headers={k.lower(): v for k, v in resp.headers.items()},
                body=content,
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
