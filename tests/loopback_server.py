"""A local HTTP server on 127.0.0.1 with Range support, for tests that download (no internet)."""

import re
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# --- a local HTTP server with Range support ------------------------------------------------


class RangeHandler(SimpleHTTPRequestHandler):
    """Serves files with ``Range: bytes=N-`` support (206 + Content-Range) unless told not to."""

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404, "not found")
            return
        data = path.read_bytes()
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and server.honour_range:
            start = int(match[1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = data[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cut_after is not None:  # a dropped connection: fewer bytes than announced
            body = body[: server.cut_after]
            server.cut_after = None
        self.wfile.write(body)


class Server:
    def __init__(self, root: Path, httpd: ThreadingHTTPServer):
        self.root = root
        self.httpd = httpd
        host, port = httpd.server_address[:2]
        self.base = f"http://{host}:{port}"

    def put(self, name: str, data: bytes) -> str:
        """Serve ``data`` as ``name``; return its URL."""
        (self.root / name).write_bytes(data)
        return f"{self.base}/{name}"

    @property
    def requests(self) -> list[tuple[str, str | None]]:
        return self.httpd.requests

    def cut_next_response_after(self, size: int) -> None:
        self.httpd.cut_after = size

    @property
    def honour_range(self) -> bool:
        return self.httpd.honour_range

    @honour_range.setter
    def honour_range(self, value: bool) -> None:
        self.httpd.honour_range = value


NO_PROXY_VARIABLES = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy")


@pytest.fixture
def server(tmp_path, monkeypatch):
    for name in NO_PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "served"
    root.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(root)))
    httpd.requests = []
    httpd.honour_range = True
    httpd.cut_after = None
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Server(root, httpd)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
