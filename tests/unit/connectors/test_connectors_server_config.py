import uvloop
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from caremesh.connectors.http.server import server, server_config


def test_http_apis_are_served_by_uvloop_and_httptools() -> None:
    config = server_config(FastAPI(), "127.0.0.1", 0)

    config.load()

    assert config.http_protocol_class is HttpToolsProtocol
    factory = config.get_loop_factory()
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_http_apis_log_no_urls_and_name_no_server() -> None:
    config = server(FastAPI(), "127.0.0.1", 0).config

    assert config.access_log is False  # URLs may carry patient keys
    assert config.server_header is False
    assert config.lifespan == "on"
