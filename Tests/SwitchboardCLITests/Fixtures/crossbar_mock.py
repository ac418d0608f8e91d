#!/usr/bin/env python3
"""A loopback stand-in for Kazoo's crossbar webhooks API (../shared/kazoo/crossbar-webhooks.md), for tests.

Usage: crossbar_mock.py SEED.json   prints the port it listens on (127.0.0.1), then serves until killed.
The seed: {"account": "acct1", "api_key": "<64 chars>", "users": {"admin": "secret"}, "account_name": "acme",
"page_size": 2, "token_requests": 3, "hooks": [docs], "attempts": {"hook id": [items]}}. A token stops working
after token_requests authenticated requests (as an expired one does). GET /_state shows everything.
"""
import hashlib, json, re, sys, uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, parse_qs

seed = json.load(open(sys.argv[1]))
ACCOUNT = seed.get("account", "acct1")
state = {"hooks": {h["id"]: h for h in seed.get("hooks", [])}, "deleted": [], "auth_calls": 0, "tokens": {}}
ATTEMPTS = seed.get("attempts", {})
PAGE = seed.get("page_size", 50)
TYPES = ["channel_create", "channel_answer", "channel_bridge", "channel_destroy", "notifications", "object",
         "parking", "sms", "mms", "all"]


def envelope(data, **extra):
    return dict({"status": "success", "data": data, "request_id": str(uuid.uuid4()), "revision": "1-x"}, **extra)


def error(code, message, data):
    return code, {"status": "error", "error": str(code), "message": message, "data": data}


def page(items, query):
    start = int(query.get("start_key", ["0"])[0])
    chunk = items[start:start + PAGE]
    extra = {"page_size": len(chunk), "start_key": str(start)}
    if start + PAGE < len(items):
        extra["next_start_key"] = str(start + PAGE)
    return 200, envelope(chunk, **extra)


def validate(doc):
    problems = {}
    for field in ("name", "uri", "hook"):
        if not doc.get(field):
            problems[field] = {"required": {"message": "Field is required but missing"}}
    uri = doc.get("uri", "")
    if uri and (not re.match(r"^https?://", uri) or re.match(r"^https?://(localhost|127\.0\.0\.1|0\.0\.0\.0)[:/]", uri)):
        problems["uri"] = {"error": {"message": "invalid client URL", "value": uri}}
    if doc.get("hook") and doc["hook"] not in TYPES:
        problems["hook"] = {"enum": {"message": "Value not found in enumerated list of values", "value": doc["hook"]}}
    custom = doc.get("custom_data") or {}
    if doc.get("hook") in ("notifications", "object") and "type" not in custom:
        problems["custom_data.type"] = {"required": {"message": "missing required modifier"}}
    if doc.get("hook") == "object" and "action" not in custom:
        problems["custom_data.action"] = {"required": {"message": "missing required modifier"}}
    return problems


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}").get("data", {})

    def authorized(self):
        token = self.headers.get("X-Auth-Token")
        if token not in state["tokens"] or state["tokens"][token] <= 0:
            return False
        state["tokens"][token] -= 1
        return True

    def route(self, method):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        path = url.path
        if path == "/_state":
            return 200, {"hooks": sorted(state["hooks"].values(), key=lambda h: h["id"]),
                         "deleted": state["deleted"], "auth_calls": state["auth_calls"]}
        if path == "/v2/api_auth" and method == "PUT":
            key = self.body().get("api_key", "")
            if len(key) != 64:
                return error(400, "validation error", {"api_key": {"minLength": {"message": "String must be at least 64 characters"}}})
            if key != seed["api_key"]:
                return error(404, "bad identifier", {"cause": key, "message": "bad identifier"})
            return self.token()
        if path == "/v2/user_auth" and method == "PUT":
            data = self.body()
            for user, password in seed.get("users", {}).items():
                expected = hashlib.md5(f"{user.lower()}:{password}".encode()).hexdigest()
                if data.get("credentials") == expected and data.get("account_name") == seed.get("account_name"):
                    return self.token()
            return error(401, "invalid_credentials", {"message": "invalid credentials"})
        if not self.authorized():
            return error(401, "invalid credentials", {})
        m = re.match(r"^/v2/accounts/([^/]+)/webhooks(?:/([^/]+))?(/attempts)?$", path)
        if not m or m.group(1) != ACCOUNT:
            return error(404, "bad_identifier", {"cause": path, "message": "bad identifier"})
        hook_id, attempts = m.group(2), m.group(3)
        if hook_id is None:
            if method == "GET":
                items = [{k: h[k] for k in ("id", "hook", "name", "uri", "enabled", "disable_reason") if k in h}
                         for h in sorted(state["hooks"].values(), key=lambda h: h["id"], reverse=True)]
                return page(items, query)
            if method == "PUT":
                doc = self.body()
                problems = validate(doc)
                if problems:
                    return error(400, "validation error", problems)
                doc = dict({"http_verb": "post", "format": "form-data", "retries": 2, "enabled": True,
                            "include_internal_legs": True}, **doc)
                doc["id"] = uuid.uuid4().hex
                state["hooks"][doc["id"]] = doc
                return 201, envelope(doc)
            return error(405, "method not allowed", {})
        if hook_id not in state["hooks"]:
            return error(404, "bad_identifier", {"cause": hook_id, "message": "bad identifier"})
        if attempts:
            return page(ATTEMPTS.get(hook_id, []), query)
        if method == "GET":
            return 200, envelope(state["hooks"][hook_id])
        if method == "PATCH":
            doc = dict(state["hooks"][hook_id], **self.body())
            problems = validate(doc)
            if problems:
                return error(400, "validation error", problems)
            if doc.get("enabled"):
                doc.pop("disable_reason", None)
            state["hooks"][hook_id] = doc
            return 200, envelope(doc)
        if method == "DELETE":
            doc = state["hooks"].pop(hook_id)
            state["deleted"].append(doc["name"])
            return 200, envelope(dict(doc, _read_only={"deleted": True}))
        return error(405, "method not allowed", {})

    def token(self):
        state["auth_calls"] += 1
        token = uuid.uuid4().hex
        state["tokens"][token] = seed.get("token_requests", 1000)
        return 201, {"status": "success", "auth_token": token, "data": {"account_id": ACCOUNT}}

    def handle_method(self, method):
        code, body = self.route(method)
        self.answer(code, body)

    def do_GET(self): self.handle_method("GET")
    def do_PUT(self): self.handle_method("PUT")
    def do_POST(self): self.handle_method("POST")
    def do_PATCH(self): self.handle_method("PATCH")
    def do_DELETE(self): self.handle_method("DELETE")


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
