#!/usr/bin/env python3
"""Check what the SAM templates promise, on the CloudFormation that SAM makes of them.

    scripts/check_templates.py V2_CONTEXT.json REST_CONTEXT.json

The two files hold the jotgate authorizer's real answers to an HTTP API (2.0) event and
to a REST API REQUEST event for a valid token (written by the Rust test
`the_templates_protect_a_route_end_to_end`). Checked:

- deploy/aws/template.yaml: GET /hello is routed through the `Jotgate` authorizer; its
  inline function, given the HTTP API event shape with that context, answers
  `Hello <username>`, and without one answers 401.
- deploy/aws/rest-api.yaml: a REQUEST authorizer without result caching (never a
  TOKEN authorizer cached per token); API Gateway's own 401 and 403 in jotgate's shape
  (RFC 6750 challenge, no error= on the 401, insufficient_scope on the 403, the JSON
  error body); the same function with the REST event shape.

Exit 77 (skipped) when samtranslator / cfn-lint are not installed.
"""

import json
import os
import sys

try:
    from cfnlint.decode import decode
    from samtranslator.translator.transform import transform
except ImportError:
    print("check_templates: cfn-lint / samtranslator not installed; skipped")
    sys.exit(77)

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


class NoPolicies:
    def load(self):
        return {}


def translate(name, params):
    tpl, errors = decode(os.path.join(ROOT, "deploy", "aws", name))
    assert not errors, errors
    src = json.loads(json.dumps(tpl))
    # `sam package` uploads local code and writes its S3 location; stand in for it.
    for r in tpl["Resources"].values():
        props = r.get("Properties", {})
        if isinstance(props.get("CodeUri"), str) and not props["CodeUri"].startswith("s3://"):
            props["CodeUri"] = "s3://bucket/jotgate.zip"
    return src, transform(tpl, params, NoPolicies())


def run_inline(code, event):
    scope = {}
    exec(compile(code, "InlineCode", "exec"), scope)
    out = scope["handler"](event, None)
    return out["statusCode"], json.loads(out["body"]), out["headers"]


def check_hello(code, event_with, ctx, username, shape):
    status, body, headers = run_inline(code, event_with(ctx))
    assert status == 200 and body == {"message": f"Hello {username}"}, (shape, status, body)
    assert headers["cache-control"] == "no-store", headers
    status, body, _ = run_inline(code, event_with(None))
    assert status == 401 and body["code"] == "token_missing", (shape, status, body)


def main():
    v2_ctx = json.load(open(sys.argv[1]))
    rest_ctx = json.load(open(sys.argv[2]))
    username = v2_ctx["username"]

    # The HTTP API template: GET /hello behind the authorizer.
    src, out = translate(
        "template.yaml",
        {
            "Issuer": "https://auth.example.com",
            "FeedTokenArn": "arn:aws:secretsmanager:us-east-1:1:secret:feed",
        },
    )
    body = out["Resources"]["HttpApi"]["Properties"]["Body"]
    get = body["paths"]["/hello"]["get"]
    assert {"Jotgate": []} in get["security"], get
    assert "Jotgate" in body["components"]["securitySchemes"], body["components"]
    code = src["Resources"]["HelloFunction"]["Properties"]["InlineCode"]

    def v2_event(ctx):
        rc = {"http": {"method": "GET", "path": "/hello"}}
        if ctx is not None:
            rc["authorizer"] = {"lambda": ctx}
        return {"version": "2.0", "rawPath": "/hello", "requestContext": rc}

    check_hello(code, v2_event, v2_ctx, username, "http api")

    # The REST variant: REQUEST authorizer, no caching, jotgate-shaped 401/403.
    src, out = translate(
        "rest-api.yaml",
        {"AuthorizerFunctionArn": "arn:aws:lambda:us-east-1:1:function:jotgate-authorizer"},
    )
    body = out["Resources"]["RestApi"]["Properties"]["Body"]
    auth = body["securityDefinitions"]["Jotgate"]["x-amazon-apigateway-authorizer"]
    assert auth["type"] == "request", auth
    ident = auth.get("identitySource", "")
    assert auth.get("authorizerResultTtlInSeconds") == 0 or (
        "context.httpMethod" in ident and "context.path" in ident
    ), "a cached decision must be keyed on the method and path too"
    responses = body["x-amazon-apigateway-gateway-responses"]
    r401 = responses["UNAUTHORIZED"]
    assert r401["statusCode"] == "401"
    challenge = r401["responseParameters"]["gatewayresponse.header.WWW-Authenticate"]
    assert challenge.strip("'").startswith("Bearer ") and "error=" not in challenge, challenge
    e401 = json.loads(r401["responseTemplates"]["application/json"])
    assert set(e401) == {"status", "error", "code"} and e401["status"] == "error", e401
    r403 = responses["ACCESS_DENIED"]
    assert r403["statusCode"] == "403"
    challenge = r403["responseParameters"]["gatewayresponse.header.WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge, challenge
    template = r403["responseTemplates"]["application/json"]
    # API Gateway substitutes $context.authorizer.code with the authorizer's context.
    e403 = json.loads(template.replace("$context.authorizer.code", "insufficient_scope"))
    assert e403["code"] == "insufficient_scope", e403
    for r in (r401, r403):
        headers = r["responseParameters"]
        assert headers["gatewayresponse.header.Cache-Control"] == "'no-store'", headers
    code = src["Resources"]["HelloFunction"]["Properties"]["InlineCode"]

    def rest_event(ctx):
        rc = {"httpMethod": "GET", "resourcePath": "/hello"}
        if ctx is not None:
            rc["authorizer"] = dict(ctx, principalId=ctx.get("sub", ""))
        return {"httpMethod": "GET", "path": "/hello", "requestContext": rc}

    check_hello(code, rest_event, rest_ctx, username, "rest api")
    print("check_templates: template.yaml and rest-api.yaml hold their promises")


if __name__ == "__main__":
    main()
