// A real OpenID Connect provider that is not jotgate (panva/oidc-provider), issuing RFC 9068
// JWT access tokens by the client-credentials grant. Prints "oidc-provider listening on
// URL" on stderr.
import { generateKeyPairSync } from "node:crypto";
import Provider from "oidc-provider";

const port = Number(process.argv[2] || 0);
const jwk = (type, opts) => ({ ...generateKeyPairSync(type, opts).privateKey.export({ format: "jwk" }) });
const keys = [
  { ...jwk("ec", { namedCurve: "P-256" }), kid: "op-es256", alg: "ES256", use: "sig" },
  { ...jwk("rsa", { modulusLength: 2048 }), kid: "op-rs256", alg: "RS256", use: "sig" },
];
const server = (await import("node:http")).createServer();
server.listen(port, "127.0.0.1", () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: "edge-tests",
      client_secret: "edge-tests-secret-0123456789abcdef",
      grant_types: ["client_credentials"],
      redirect_uris: [],
      response_types: [],
    }],
    jwks: { keys },
    scopes: ["orders:read", "orders:write"],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => "https://api.example.com",
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: "orders:read orders:write",
          audience: "https://api.example.com",
          accessTokenFormat: "jwt",
          jwt: { sign: { alg: process.env.OP_ALG || "ES256" } },
        }),
      },
    },
  });
  server.on("request", provider.callback());
  console.error(`oidc-provider listening on ${issuer}`); // stderr: tests read it there
});
