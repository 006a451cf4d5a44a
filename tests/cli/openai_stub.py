#!/usr/bin/env python3
"""A loopback stand-in for an OpenAI-compatible chat endpoint, for the README recipe test.

GET /v1/models lists one model; POST /v1/chat/completions answers every request with the two
sections stage 0 asks for (key elements, reasoning), naming nothing of the image. Each POST is
appended to --log (one line per request), so a test can count what was asked. The port it
listens on (0: any free one) is written to --port-file once it listens. Python's standard
library only.
"""
import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER = ("1. Key elements: a scene with strong colours and a clear subject in the centre.\n"
          "2. Reasoning: the colours and the subject's pose suggest how a viewer would feel.")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    args = ap.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def reply(self, code, obj):
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path.endswith("/models"):
                self.reply(200, {"object": "list", "data": [{"id": "gpt-4o", "object": "model"}]})
            else:
                self.reply(404, {"error": {"message": "no such path", "type": "invalid_request_error"}})

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            req = json.loads(self.rfile.read(n) or b"{}")
            if not self.path.endswith("/chat/completions"):
                self.reply(404, {"error": {"message": "no such path", "type": "invalid_request_error"}})
                return
            with open(args.log, "a") as f:
                f.write(json.dumps({"model": req.get("model"), "parts": len(req["messages"][0]["content"])}) + "\n")
            self.reply(200, {"id": "stub", "object": "chat.completion", "model": req.get("model"),
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": ANSWER}}]})

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os
    os.replace(args.port_file + ".tmp", args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
