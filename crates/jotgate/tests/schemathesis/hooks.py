"""schemathesis hooks for jotgate: real credentials for each operation, as its OpenAPI
security requirement names them (`SCHEMATHESIS_HOOKS=hooks`).

- `management`: a client-credentials token of a client holding every management scope,
  fetched afresh for each request (a test case may log the token out).
- `user`: an application token of a signed-in user, from `/refresh`; when the session has
  ended (a test case logged out everywhere, changed the password or deleted the account),
  a new user signs up.
  Its secret is never rotated nor the client deleted by a test case: a case that names it
  (its id, learnt from `GET /api/v1/clients`) names a client that does not exist instead.
- `feed`: the server's feed token.
- `client` (`/oauth/token`): HTTP Basic with a second client, which the fuzzing of that
  endpoint may lock out (five wrong secrets for one client id), leaving the first alone.

Set by crates/jotgate/tests/it/openapi.rs: JOTGATE_ST_BASE, JOTGATE_ST_CLIENT (the
management client, `id:secret`), JOTGATE_ST_FUZZED_CLIENT (`id:secret`),
JOTGATE_ST_FEED_TOKEN.
"""

import base64
import json
import os
import secrets
import threading
import urllib.error
import urllib.parse
import urllib.request

import schemathesis

BASE = os.environ["JOTGATE_ST_BASE"].rstrip("/")
FEED_TOKEN = os.environ["JOTGATE_ST_FEED_TOKEN"]
BASIC = base64.b64encode(os.environ["JOTGATE_ST_CLIENT"].encode()).decode()
FUZZED_BASIC = base64.b64encode(os.environ["JOTGATE_ST_FUZZED_CLIENT"].encode()).decode()
CLIENT_ID = os.environ["JOTGATE_ST_CLIENT"].split(":", 1)[0]
NO_SUCH_CLIENT = "cl_" + secrets.token_urlsafe(16)


def _post(path, body, headers):
    req = urllib.request.Request(BASE + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, json.load(res)
    except urllib.error.HTTPError as e:
        return e.code, None


def management_token():
    status, body = _post(
        "/oauth/token",
        b"grant_type=client_credentials",
        {
            "authorization": f"Basic {BASIC}",
            "content-type": "application/x-www-form-urlencoded",
        },
    )
    assert status == 200, f"/oauth/token answered {status}"
    return body["access_token"]


class _User:
    """One signed-in user at a time; a new one when its session has ended."""

    lock = threading.Lock()
    refresh = None

    @classmethod
    def token(cls):
        with cls.lock:
            if cls.refresh is not None:
                status, body = _post(
                    "/refresh",
                    json.dumps({"refresh_token": cls.refresh}).encode(),
                    {"content-type": "application/json"},
                )
                if status == 200:
                    cls.refresh = body["refresh_token"]
                    return body["token"]
                # Only an ended session (logged out, password changed, account deleted)
                # starts a new user; any other answer is a failure of the server's.
                assert status == 401, f"/refresh answered {status}"
            name = "st" + secrets.token_hex(6)
            status, body = _post(
                "/signup",
                json.dumps({"username": name, "password": "correct horse " + name}).encode(),
                {"content-type": "application/json"},
            )
            assert status == 201, f"/signup answered {status}"
            cls.refresh = body["refresh_token"]
            return body["token"]


def _schemes(operation):
    definition = operation.definition.raw
    return {name for req in definition.get("security", []) for name in req}


@schemathesis.auth(refresh_interval=None)
class JotgateAuth:
    def get(self, case, context):
        schemes = _schemes(context.operation)
        if "management" in schemes:
            return f"Bearer {management_token()}"
        if "user" in schemes:
            return f"Bearer {_User.token()}"
        if "feed" in schemes:
            return f"Bearer {FEED_TOKEN}"
        if "client" in schemes:
            return f"Basic {FUZZED_BASIC}"
        return None

    def set(self, case, data, context):
        params = case.path_parameters or {}
        if params.get("id") == CLIENT_ID:
            params["id"] = NO_SUCH_CLIENT
        if data is not None:
            case.headers = case.headers or {}
            case.headers["Authorization"] = data
