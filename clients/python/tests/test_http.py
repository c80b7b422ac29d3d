"""The HTTP client against scripted servers: framing, keep-alive, 100-continue."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from ociapp_runtime._http import Address, Client, parse_url

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def read_head(reader: asyncio.StreamReader) -> dict[str, str]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    lines = head.split("\r\n")
    headers = {"request-line": lines[0]}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return headers


@pytest.fixture
async def serve(tmp_path: Path):
    servers = []

    async def start(handler: Handler) -> tuple[Client, list[int]]:
        conns: list[int] = []

        async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conns.append(len(conns))
            try:
                await handler(reader, writer, len(conns))
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        sock = tmp_path / f"s{len(servers)}.sock"
        server = await asyncio.start_unix_server(on_conn, str(sock))
        servers.append(server)
        return Client(Address(unix_path=str(sock))), conns

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_keep_alive_and_chunked(serve) -> None:
    async def handler(reader, writer, _conn):
        head = await read_head(reader)
        assert head["host"] == "ociapp-runtime"
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: t\r\n\r\n")
        await read_head(reader)
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nContent-Type: application/json; charset=utf-8\r\n\r\n{}")
        await writer.drain()
        await reader.read()

    client, conns = await serve(handler)
    first = await client.request("GET", "/a")
    second = await client.request("GET", "/b")
    await client.close()
    assert (first.status, first.body) == (200, b"abcde")
    assert (second.status, second.reason, second.body, second.content_type) == (201, "Created", b"{}", "application/json")
    assert len(conns) == 1


async def test_connection_close_is_honoured(serve) -> None:
    async def handler(reader, writer, _conn):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        await writer.drain()

    client, conns = await serve(handler)
    assert (await client.request("GET", "/")).body == b"until the end"
    assert (await client.request("GET", "/")).body == b"until the end"
    await client.close()
    assert len(conns) == 2


async def test_stale_idle_connection_is_replaced(serve) -> None:
    async def handler(reader, writer, _conn):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        # Closed without saying so, as an idle timeout does.

    client, conns = await serve(handler)
    await client.request("GET", "/")
    await asyncio.sleep(0.05)
    assert (await client.request("POST", "/", body=b"x")).body == b"ok"
    await client.close()
    assert len(conns) == 2


async def test_expect_continue_sends_the_body_when_asked(serve, tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000
    path = tmp_path / "blob"
    path.write_bytes(data)

    async def handler(reader, writer, _conn):
        head = await read_head(reader)
        assert head["expect"] == "100-continue"
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
        body = await reader.readexactly(int(head["content-length"]))
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s" % (len(str(len(body))), str(len(body)).encode()))
        await writer.drain()
        await reader.read()

    client, _ = await serve(handler)
    resp = await client.request("PUT", "/up", body_file=path, expect_continue=True)
    await client.close()
    assert (resp.status, resp.body) == (201, str(len(data)).encode())


async def test_expect_continue_refused_sends_nothing(serve, tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"x" * 100_000)
    received = []

    async def handler(reader, writer, _conn):
        await read_head(reader)
        # As the daemon (Go's server) does, the connection closes after a
        # refusal whose body was never sent.
        writer.write(b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig")
        await writer.drain()
        received.append(await reader.read())

    client, conns = await serve(handler)
    start = time.monotonic()
    async with asyncio.timeout(10):
        resp = await client.request("PUT", "/up", body_file=path, expect_continue=True)
    assert (resp.status, resp.body) == (413, b"big")
    assert time.monotonic() - start < 1.0
    async with asyncio.timeout(10):
        await client.request("PUT", "/up", body=b"", expect_continue=True)
    await client.close()
    await asyncio.sleep(0.05)
    assert received == [b"", b""]
    assert len(conns) == 2


async def test_not_http(serve) -> None:
    async def handler(reader, writer, _conn):
        await read_head(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n")
        await writer.drain()

    client, _ = await serve(handler)
    with pytest.raises(OSError):
        async with asyncio.timeout(10):
            await client.request("GET", "/")
    await client.close()


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("unix:///run/x.sock", Address(unix_path="/run/x.sock")),
        ("tcp://10.0.0.1:7000", Address(host="10.0.0.1", port=7000)),
        ("http://host:80", Address(host="host", port=80)),
        ("https://host", Address(host="host", port=443, tls=True)),
        ("https://[::1]:8443/", Address(host="::1", port=8443, tls=True)),
    ],
)
def test_parse_url(url: str, address: Address) -> None:
    assert parse_url(url) == address


@pytest.mark.parametrize("url", ["unix://relative.sock", "ftp://h:1", "http://", "http://h:1/prefix", "h:1"])
def test_parse_url_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        parse_url(url)


def test_host_header() -> None:
    assert Address(host="::1", port=8443, tls=True).host_header == "[::1]:8443"
    assert str(Address(host="::1", port=8443, tls=True)) == "https://[::1]:8443"
