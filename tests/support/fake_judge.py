"""A fake judge: an OpenAI-compatible ``/v1/chat/completions`` server on 127.0.0.1 in a thread.

It answers by rule, so tests can work the expected scores out by hand: the reply for a request is
``replies[word]`` for the first word of ``replies`` found in the user message (the questions of the
fixtures carry such words), else ``default``. Every request is kept in ``requests``.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL_VERSION = "fake-judge-0613"


class FakeJudge:
    def __init__(self) -> None:
        self.replies: dict[str, str] = {}
        self.default = "{'pred': 'no', 'score': 0}"
        self.requests: list[dict] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reply_for(self, body: dict) -> str:
        user = body["messages"][-1]["content"]
        return next((reply for word, reply in self.replies.items() if word in user), self.default)

    def _handler(self):
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    self.send_error(404)
                    return
                judge.requests.append(body)
                content = judge.reply_for(body)
                payload = json.dumps({
                    "id": f"chatcmpl-{len(judge.requests)}", "object": "chat.completion", "created": 0,
                    "model": MODEL_VERSION, "system_fingerprint": "fp_test",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        return Handler
