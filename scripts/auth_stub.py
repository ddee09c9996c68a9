import json, sys, threading
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
tenants = {}
lock = threading.Lock()
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code); self.send_header('Content-Type','application/json')
        self.send_header('Content-Length', str(len(data))); self.end_headers(); self.wfile.write(data)
    def do_GET(self):
        with lock: self.reply(200, {"tenants": sorted(tenants)})
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get('Content-Length', 0))) or b'{}')
        with lock:
            if body.get("tenantId") in tenants: return self.reply(409, {"error": "tenant already exists"})
            tenants[body["tenantId"]] = body.get("adminUserId")
        self.reply(201, {"tenantId": body["tenantId"]})
    def do_DELETE(self):
        tid = self.path.rsplit('/', 1)[-1]
        with lock:
            if tenants.pop(tid, None) is None: return self.reply(404, {"error": "unknown tenant"})
        self.reply(200, {})
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
