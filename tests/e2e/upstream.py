"""The upstream of the end-to-end suite: answers every request with 200 and a JSON body that
echoes what reached it, so a check can see the headers a proxy passed on.

    python3 upstream.py PORT

Body: {"method": ..., "path": ... (with the query), "headers": {lower-cased name: value}}; a
header sent more than once is joined with ", ". Listens on 127.0.0.1 only, HTTP/1.1 with
Content-Length, Nagle off (else each response waits ~40 ms for a delayed ACK). Exits on SIGTERM.
"""

import json
import signal
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "e2e-upstream"

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _echo(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 1 << 20))
        headers = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        body = json.dumps(
            {"method": self.command, "path": self.path, "headers": headers},
            sort_keys=True,
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _echo

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    port = int(sys.argv[1])
    server = Server(("127.0.0.1", port), EchoHandler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"upstream ready on 127.0.0.1:{port}", flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass


if __name__ == "__main__":
    main()
