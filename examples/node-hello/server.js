// node-hello: a plain Node.js HTTP server that knows nothing of switchyard.
// `switchyard agent` runs beside it and takes part in blue/green switches
// for it; see README.md. It answers GET / with who it is, POST / with the
// size and SHA-256 of the body, GET /health with 200 while healthy (SIGUSR1
// toggles that, to rehearse a sick instance), and /status/CODE with CODE.
//
//   node server.js --port 8080 --color blue [--id hello-blue-1] [--host 127.0.0.1]
'use strict';

const http = require('http');
const crypto = require('crypto');

function arg(name, def) {
  const i = process.argv.indexOf('--' + name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}

const host = arg('host', '127.0.0.1');
const port = Number(arg('port', process.env.PORT || '8080'));
const color = arg('color', process.env.COLOR || 'blue');
const id = arg('id', `node-hello-${color}-${process.pid}`);
let healthy = true;

function reply(res, code, body) {
  const data = JSON.stringify(body);
  res.writeHead(code, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(data),
    'X-Switchyard-Color': color,
  });
  res.end(data);
}

const server = http.createServer((req, res) => {
  const who = { service: 'hello', color, instance: id, runtime: 'node ' + process.version };
  if (req.url === '/health') {
    return reply(res, healthy ? 200 : 500, { status: healthy ? 'ok' : 'unhealthy' });
  }
  const status = /^\/status\/([1-5][0-9][0-9])$/.exec(req.url);
  if (status) {
    return reply(res, Number(status[1]), { ...who, status: Number(status[1]) });
  }
  if (req.method === 'POST') {
    const hash = crypto.createHash('sha256');
    let bytes = 0;
    req.on('data', (chunk) => { hash.update(chunk); bytes += chunk.length; });
    req.on('end', () => reply(res, 200, { ...who, bytes, sha256: hash.digest('hex') }));
    return;
  }
  reply(res, 200, who);
});
// Longer than any upstream idle timeout a gateway keeps, so that the
// gateway, not the server, closes idle connections.
server.keepAliveTimeout = 75000;
server.headersTimeout = 76000;

process.on('SIGUSR1', () => {
  healthy = !healthy;
  console.log(`health toggled: ${healthy ? 'healthy' : 'unhealthy'}`);
});
// Finish what is in flight, then exit. switchyard agent has drained the
// instance out of every gateway before it sends SIGTERM.
process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  server.closeIdleConnections();
  setTimeout(() => process.exit(0), 5000).unref();
});

server.listen(port, host, () => console.log(`LISTEN ${host}:${server.address().port} ID ${id}`));
