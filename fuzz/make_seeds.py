#!/usr/bin/env python3
"""Writes the fuzz targets' fixed test keys (keys/) and seed corpora (corpus/). Run once;
the outputs are committed, so fuzzing is reproducible. The keys are for fuzzing only."""
import base64, json, os, pathlib
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa, ec

here = pathlib.Path(__file__).parent
keys = here / "keys"
keys.mkdir(exist_ok=True)

def b64(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec_key = ec.generate_private_key(ec.SECP256R1())
secret = b"fuzzing-only-shared-secret-0123456789abcdef"
pn = rsa_key.public_key().public_numbers()
ecn = ec_key.public_key().public_numbers()
jwks = {"keys": [
    {"kty": "RSA", "kid": "rsa1", "alg": "RS256", "use": "sig", "n": b64(pn.n), "e": b64(pn.e)},
    {"kty": "EC", "kid": "ec1", "alg": "ES256", "use": "sig", "crv": "P-256",
     "x": base64.urlsafe_b64encode(ecn.x.to_bytes(32, "big")).rstrip(b"=").decode(),
     "y": base64.urlsafe_b64encode(ecn.y.to_bytes(32, "big")).rstrip(b"=").decode()},
]}
(keys / "jwks.json").write_text(json.dumps(jwks, indent=1))
(keys / "secret.txt").write_bytes(secret)

claims = {"iss": "https://issuer.fuzz", "aud": "api", "sub": "user-1", "jti": "j1",
          "exp": 4102444800, "iat": 1700000000, "scope": "orders:read", "roles": ["admin"]}
tokens = [
    jwt.encode(claims, rsa_key, "RS256", headers={"kid": "rsa1", "typ": "at+jwt"}),
    jwt.encode(claims, ec_key, "ES256", headers={"kid": "ec1", "typ": "at+jwt"}),
    jwt.encode({**claims, "iss": "https://hs.fuzz"}, secret, "HS256", headers={"typ": "at+jwt"}),
    jwt.encode({**claims, "nbf": 1700000000, "roles": "admin user"}, rsa_key, "RS256",
               headers={"kid": "rsa1", "typ": "application/at+jwt"}),
]
(keys / "valid_tokens.txt").write_text("\n".join(tokens) + "\n")

def seed(target, name, data):
    d = here / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())

for i, t in enumerate(tokens):
    seed("jws", f"valid{i}", t)
seed("jws", "none", "eyJhbGciOiJub25lIn0.eyJpc3MiOiJodHRwczovL2lzc3Vlci5mdXp6In0.")
seed("jwks", "jwks", json.dumps(jwks))
seed("jwks", "oct", '{"keys":[{"kty":"oct","k":"AAAA"}]}')
for p in ["/", "/a/b", "/orders/%61bc", "/a;b", "/a/../b", "/%2e%2e/x", "/caf%C3%A9?x=1", "/a//b/", "/ｆull"]:
    seed("path", p.replace("/", "_").replace("?", "Q").replace("%", "P") or "root", p)
for f in sorted((here.parent / "deploy" / "aws").glob("*.toml")) + sorted((here.parent / "docs").glob("*.toml")):
    seed("policy", f.name, f.read_bytes())
seed("policy", "full", """
[verifier]
leeway = 1.5
cache_size = 10
[[issuer]]
issuer = "https://issuer.fuzz"
audiences = ["api"]
algorithms = ["RS256"]
jwks = '{"keys":[]}'
roles_claim = "realm_access.roles"
[default]
access = "authenticated"
[[route]]
path = "/admin/*"
methods = ["GET", "POST"]
roles_any = ["admin"]
[[route]]
path = "/public/**"
access = "public"
[gateway]
trusted_proxies = ["10.0.0.0/8"]
[authorizer]
base_paths = ["/v1"]
freshness = 1
""")
# Bodies: the first byte picks the endpoint (signup, login, refresh, logout, verify).
for i, body in enumerate([
    '{"username":"alice","password":"correct horse battery"}',
    '{"username":"alice","password":"correct horse battery"}',
    '{"refresh_token":"abc"}',
    '{"refresh_token":"abc"}',
    '{"token":"' + tokens[0] + '"}',
    '{"username":"a","username":"b"}',
    '[1,2,3]',
]):
    seed("bodies", f"b{i}", bytes([i % 5]) + body.encode())
fixtures = here.parent / "crates" / "jotgate" / "tests" / "fixtures"
for f in sorted(fixtures.rglob("*.json")):
    text = f.read_text().replace("{{TOKEN}}", tokens[0])
    seed("lambda_event", f.parent.name + "-" + f.name, text)
    seed("authorizer_event", f.parent.name + "-" + f.name, text)
