"""A webhook receiver for keyhold's tests: logs every request it gets (path, headers,
body) as a JSON line, and answers by path: /ok 200, /gone 410, /flaky 500 to the first
two requests of each webhook-id and 200 after, /moved 307 to /ok. Prints its port on the first line.

Usage: receiver.py LOG [PORT]
"""

import base64
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG = sys.argv[1]
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 0
lock = threading.Lock()
seen = {}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        msg_id = self.headers.get("webhook-id", "")
        with lock:
            seen[(self.path, msg_id)] = seen.get((self.path, msg_id), 0) + 1
            n = seen[(self.path, msg_id)]
            if self.path == "/gone":
                status = 410
            elif self.path == "/flaky" and n <= 2:
                status = 500
            elif self.path == "/moved":
                status = 307
            else:
                status = 200
            with open(LOG, "a") as f:
                f.write(json.dumps({
                    "path": self.path,
                    "status": status,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": base64.b64encode(body).decode(),
                }) + "\n")
        self.send_response(status)
        if status == 307:
            self.send_header("location", "/ok")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
