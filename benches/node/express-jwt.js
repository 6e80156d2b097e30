// Express + express-jwt doing the same check as the gateway: RS256 signature with the
// issuer's key, issuer, audience, expiry. The key is read once from jotgate's JWKS.
const express = require("express");
const { expressjwt } = require("express-jwt");
const crypto = require("crypto");
const [port, issuer] = [Number(process.argv[2]), process.argv[3]];

fetch(`${issuer}/.well-known/jwks.json`)
  .then((r) => r.json())
  .then(({ keys }) => {
    const pem = crypto.createPublicKey({ key: keys[0], format: "jwk" }).export({ type: "spki", format: "pem" });
    const app = express();
    app.use(expressjwt({ secret: pem, algorithms: ["RS256"], issuer, audience: "jotgate" }));
    app.get("/orders", (req, res) => res.json({ ok: true, sub: req.auth.sub }));
    app.use((err, req, res, next) => res.status(err.status || 500).json({ status: "error", error: err.message }));
    app.listen(port, "127.0.0.1", () => console.log(`express-jwt on ${port}`));
  });
