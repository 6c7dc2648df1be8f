"""python-hello: a plain Python http.server app that knows nothing of
switchyard; `switchyard agent` runs beside it (see ../node-hello/README.md,
the same two lines with `python3 server.py`). It answers GET / with who it
is, POST / with the size and SHA-256 of the body, GET /health with 200
while healthy (SIGUSR1 toggles that, to rehearse a sick instance), and
/status/CODE with CODE.

    python3 server.py --port 8080 --color blue [--id hello-blue-1] [--host 127.0.0.1]
"""

import argparse
import hashlib
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
parser.add_argument("--color", default=os.environ.get("COLOR", "blue"))
parser.add_argument("--id", default="")
args = parser.parse_args()
instance = args.id or f"python-hello-{args.color}-{os.getpid()}"
state = {"healthy": True}


def toggle(*_):
    state["healthy"] = not state["healthy"]
    print("health toggled:", "healthy" if state["healthy"] else "unhealthy", flush=True)


signal.signal(signal.SIGUSR1, toggle)


class Handler(BaseHTTPRequestHandler):
    # Keep-alive, as a gateway expects of an upstream.
    protocol_version = "HTTP/1.1"

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Switchyard-Color", args.color)
        self.end_headers()
        self.wfile.write(data)

    def who(self):
        return {"service": "hello", "color": args.color, "instance": instance, "runtime": "python " + sys.version.split()[0]}

    def do_GET(self):
        if self.path == "/health":
            ok = state["healthy"]
            self.reply(200 if ok else 500, {"status": "ok" if ok else "unhealthy"})
            return
        code = self.path.removeprefix("/status/")
        if code != self.path and code.isdigit() and 100 <= int(code) <= 599:
            self.reply(int(code), dict(self.who(), status=int(code)))
            return
        self.reply(200, self.who())

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        self.reply(200, dict(self.who(), bytes=len(body), sha256=hashlib.sha256(body).hexdigest()))

    def log_message(self, *_):
        pass  # one line per request would drown the agent's log


server = ThreadingHTTPServer((args.host, args.port), Handler)
server.daemon_threads = True
print(f"LISTEN {args.host}:{server.server_address[1]} ID {instance}", flush=True)
server.serve_forever()
