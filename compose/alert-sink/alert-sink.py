"""Webhook receiver of the compose stack's Alertmanager (monitoring/alertmanager/alertmanager.yml).

Prints one line per alert of every notification it receives, so routing can be watched
locally without a Slack or PagerDuty account:  docker compose logs -f alert-sink
  [page] FIRING TodoDatabaseDown severity=critical instance=… : A todo-service replica …
The path names the receiver (/page, /ticket). GET /healthz answers 200 (healthcheck).
Standard library only; listens on 0.0.0.0:8080 inside the compose network (not published).
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Sink(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self.send_response(400)
            self.end_headers()
            return
        receiver = self.path.strip("/") or body.get("receiver", "?")
        for alert in body.get("alerts", []):
            labels = alert.get("labels", {})
            shown = " ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "alertname")
            print(f"[{receiver}] {alert.get('status', '?').upper()} {labels.get('alertname', '?')} {shown} : "
                  f"{alert.get('annotations', {}).get('summary', '')} "
                  f"({alert.get('annotations', {}).get('runbook_url', '')})", flush=True)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass  # one line per alert is enough


if __name__ == "__main__":
    print("alert-sink: listening on :8080 (/page, /ticket)", flush=True)
    sys.stdout.flush()
    ThreadingHTTPServer(("0.0.0.0", 8080), Sink).serve_forever()
