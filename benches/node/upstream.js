// The upstream behind `jotgate gateway` in benches/gateway.sh: Node's plain http server.
const http = require("http");
const port = Number(process.argv[2]);
http
  .createServer((req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ ok: true, sub: req.headers["x-jotgate-sub"] || null }));
  })
  .listen(port, "127.0.0.1", () => console.log(`upstream on ${port}`));
