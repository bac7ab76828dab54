// The reference tus server for bench/bench_tus.py: @tus/server 2.x with @tus/file-store,
// as its README starts it, plus GET /health so the bench knows it is up.
// argv: PEER_DIR (where npm installed the packages) HOST PORT DIRECTORY
import http from "node:http";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const [peerDir, host, port, directory] = process.argv.slice(2);
// ESM ignores NODE_PATH: resolve the packages from the bench's own npm prefix.
const require = createRequire(`${peerDir}/package.json`);
const load = (name) => import(pathToFileURL(require.resolve(name)).href);
const { Server } = await load("@tus/server");
const { FileStore } = await load("@tus/file-store");

const tus = new Server({ path: "/files", datastore: new FileStore({ directory }) });
http
  .createServer((req, res) => {
    if (req.url === "/health") {
      res.writeHead(200, { "Content-Type": "application/json", "Content-Length": 11 }).end('{"ok":true}');
      return;
    }
    tus.handle(req, res);
  })
  .listen(Number(port), host);
