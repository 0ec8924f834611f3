// Local Cloudflare D1 server: serves D1's REST API on loopback, backed by a D1
// binding that runs in workerd (Cloudflare's Workers runtime) through Miniflare.
//
// Usage: node server.mjs [--port N] [--host 127.0.0.1|::1] [--persist DIR]
//                        [--account-id ID] [--database-id ID]
//
// When the server is ready, it writes exactly one JSON line to stdout:
//   {"base_url": "http://127.0.0.1:PORT/client/v4/accounts/ACC/d1/database/DB",
//    "port": PORT, "pid": PID}
// Everything else goes to stderr. The server stops (and workerd with it) on
// SIGTERM, SIGINT, or end of stdin, so a parent that dies closes our stdin.

import fs from "node:fs";
import os from "node:os";
import process from "node:process";
import path from "node:path";
import { Log, LogLevel, Miniflare, Response } from "miniflare";

// Pinned to a date this workerd (1.20260426.1) supports.
const COMPATIBILITY_DATE = "2026-04-01";
const ALLOWED_HOSTS = new Set(["127.0.0.1", "::1"]);

// Miniflare or a dependency may call console.log, but stdout carries only the ready line.
console.log = (...args) => console.error(...args);
console.info = (...args) => console.error(...args);

function usageError(message) {
  process.stderr.write(`server.mjs: ${message}\n`);
  process.stderr.write(
    "usage: node server.mjs [--port N] [--host 127.0.0.1|::1] [--persist DIR] " +
      "[--account-id ID] [--database-id ID]\n",
  );
  process.exit(2);
}

function parseArgs(argv) {
  const options = {
    port: 0,
    host: "127.0.0.1",
    persist: null,
    accountId: "local-account",
    databaseId: "local-database",
  };
  const idPattern = /^[A-Za-z0-9_-]{1,64}$/;
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i];
    const value = argv[i + 1];
    if (value === undefined) usageError(`missing value for ${name}`);
    i++;
    switch (name) {
      case "--port": {
        const port = Number(value);
        if (!Number.isInteger(port) || port < 0 || port > 65535) {
          usageError(`invalid --port ${JSON.stringify(value)}: expected an integer 0-65535`);
        }
        options.port = port;
        break;
      }
      case "--host":
        if (!ALLOWED_HOSTS.has(value)) {
          usageError(`invalid --host ${JSON.stringify(value)}: only 127.0.0.1 or ::1 are allowed`);
        }
        options.host = value;
        break;
      case "--persist":
        if (value === "") usageError("invalid --persist: the directory path is empty");
        options.persist = path.resolve(value);
        break;
      case "--account-id":
      case "--database-id":
        if (!idPattern.test(value)) {
          usageError(`invalid ${name} ${JSON.stringify(value)}: use 1-64 characters from A-Z a-z 0-9 _ -`);
        }
        if (name === "--account-id") options.accountId = value;
        else options.databaseId = value;
        break;
      default:
        usageError(`unknown option ${JSON.stringify(name)}`);
    }
  }
  return options;
}

// The Worker that implements the REST API. It runs inside workerd, so it is
// kept as source text and handed to Miniflare.
const WORKER_SOURCE = String.raw`
const JSON_HEADERS = { "content-type": "application/json" };

function envelope(status, result, errors, extraHeaders) {
  const body = {
    success: errors.length === 0,
    errors,
    messages: [],
    result,
  };
  return new Response(JSON.stringify(body), {
    status,
    headers: { ...JSON_HEADERS, ...(extraHeaders || {}) },
  });
}

function failure(status, code, message, extraHeaders) {
  return envelope(status, [], [{ code, message }], extraHeaders);
}

// Thrown for a malformed request body. It becomes HTTP 400 with code 7400.
class RequestError extends Error {}

// Split SQL text into statements at top-level semicolons. Quotes, identifiers
// and comments are skipped, and the BEGIN ... END body of CREATE TRIGGER (which
// contains semicolons) stays in one statement. Empty statements are dropped.
function splitStatements(sql) {
  const statements = [];
  const n = sql.length;
  let start = 0;
  let i = 0;
  let hasContent = false;
  let leadingWords = [];
  let depth = 0;

  const isTrigger = () =>
    leadingWords[0] === "CREATE" &&
    (leadingWords[1] === "TRIGGER" ||
      ((leadingWords[1] === "TEMP" || leadingWords[1] === "TEMPORARY") && leadingWords[2] === "TRIGGER"));

  const skipQuoted = (close) => {
    i++;
    while (i < n) {
      if (sql[i] === close) {
        if (close !== "]" && sql[i + 1] === close) {
          i += 2;
          continue;
        }
        i++;
        return;
      }
      i++;
    }
  };

  while (i < n) {
    const c = sql[i];
    if (c === "'" || c === '"' || c === "\x60") {
      skipQuoted(c);
      hasContent = true;
    } else if (c === "[") {
      skipQuoted("]");
      hasContent = true;
    } else if (c === "-" && sql[i + 1] === "-") {
      const end = sql.indexOf("\n", i);
      i = end === -1 ? n : end + 1;
    } else if (c === "/" && sql[i + 1] === "*") {
      const end = sql.indexOf("*/", i + 2);
      i = end === -1 ? n : end + 2;
    } else if (/[A-Za-z_]/.test(c)) {
      let j = i + 1;
      while (j < n && /[A-Za-z0-9_$]/.test(sql[j])) j++;
      const word = sql.slice(i, j).toUpperCase();
      if (leadingWords.length < 3) leadingWords.push(word);
      if (isTrigger()) {
        if (word === "BEGIN" || word === "CASE") depth++;
        else if (word === "END" && depth > 0) depth--;
      }
      hasContent = true;
      i = j;
    } else if (c === ";" && depth === 0) {
      if (hasContent) statements.push(sql.slice(start, i + 1).trim());
      start = i + 1;
      hasContent = false;
      leadingWords = [];
      i++;
    } else {
      if (!/\s/.test(c)) hasContent = true;
      i++;
    }
  }
  if (hasContent) statements.push(sql.slice(start).trim());
  return statements;
}

function parseParams(params, where) {
  if (params === undefined || params === null) return [];
  if (!Array.isArray(params)) {
    throw new RequestError(where + ": params must be an array");
  }
  return params.map((value, index) => {
    if (value === null || typeof value === "string") return value;
    if (typeof value === "number") {
      if (!Number.isFinite(value)) {
        throw new RequestError(where + ": params[" + index + "] is not a finite number");
      }
      return value;
    }
    // The D1 binding stores booleans as 1 and 0.
    if (typeof value === "boolean") return value ? 1 : 0;
    throw new RequestError(
      where + ": params[" + index + "] must be a string, number, boolean or null, not " +
        (Array.isArray(value) ? "an array" : typeof value),
    );
  });
}

function parseQuery(item, where) {
  if (item === null || typeof item !== "object" || Array.isArray(item)) {
    throw new RequestError(where + " must be an object with a sql field");
  }
  if (typeof item.sql !== "string") {
    throw new RequestError(where + ": sql is missing or is not a string");
  }
  return { sql: item.sql, params: parseParams(item.params, where) };
}

// Turn the request body into the list of statements to run as one transaction.
function parseBody(body) {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new RequestError("request body must be a JSON object with sql or batch");
  }
  if (body.batch !== undefined) {
    if (body.sql !== undefined) {
      throw new RequestError("request body has both sql and batch; send one of them");
    }
    if (!Array.isArray(body.batch) || body.batch.length === 0) {
      throw new RequestError("batch must be a non-empty array of {sql, params} objects");
    }
    return body.batch.map((item, index) => parseQuery(item, "batch[" + index + "]"));
  }
  const query = parseQuery(body, "request body");
  const statements = splitStatements(query.sql);
  if (statements.length <= 1) return [query];
  if (query.params.length > 0) {
    throw new RequestError("params with multiple statements is not supported");
  }
  return statements.map((sql) => ({ sql, params: [] }));
}

// /query: rows as objects, through the binding's public API.
async function runQuery(db, queries) {
  const statements = queries.map((q) => db.prepare(q.sql).bind(...q.params));
  if (statements.length === 1) return [await statements[0].all()];
  return db.batch(statements);
}

// /raw: rows as {columns, rows}. The binding's raw() drops meta and batch()
// drops the column list, so this sends the binding's own request to the D1
// Durable Object through the binding's fetcher. That request runs all
// statements in one transaction, like batch().
// NOTE: db.fetcher is not a documented API; it exists in workerd 1.20260426.1.
async function runRaw(db, queries) {
  if (!db.fetcher || typeof db.fetcher.fetch !== "function") {
    throw new Error("the D1 binding has no fetcher; this workerd version is not supported by /raw");
  }
  const response = await db.fetcher.fetch("http://d1/query?resultsFormat=ROWS_AND_COLUMNS", {
    method: "POST",
    headers: JSON_HEADERS,
    body: JSON.stringify(queries),
  });
  const text = await response.text();
  let answer;
  try {
    answer = JSON.parse(text);
  } catch {
    throw new Error("D1_ERROR: Failed to parse body as JSON, got: " + text);
  }
  const results = Array.isArray(answer) ? answer : [answer];
  for (const item of results) {
    if (!item || item.error || item.success === false) {
      // Same prefix as the binding's errors, so /raw and /query fail alike.
      throw new Error("D1_ERROR: " + (item && item.error ? item.error : "unknown error"));
    }
  }
  return results.map((item) => ({
    results: item.results || { columns: [], rows: [] },
    success: true,
    meta: item.meta,
  }));
}

const ROUTE = /^\/client\/v4\/accounts\/([^/]+)\/d1\/database\/([^/]+)\/(query|raw)$/;

async function handle(request, env) {
  const url = new URL(request.url);
  const match = ROUTE.exec(url.pathname);
  if (!match || decodeURIComponent(match[1]) !== env.ACCOUNT_ID) {
    return failure(404, 7003, "Could not route to " + url.pathname + ", perhaps your object identifier is invalid?");
  }
  if (decodeURIComponent(match[2]) !== env.DATABASE_ID) {
    return failure(404, 7404, "The database " + decodeURIComponent(match[2]) + " could not be found");
  }
  if (request.method !== "POST") {
    return failure(405, 10405, "Method " + request.method + " not allowed; use POST", { allow: "POST" });
  }
  const authorization = request.headers.get("authorization") || "";
  if (!/^Bearer\s+\S+/i.test(authorization)) {
    return failure(401, 10000, "Authentication error: send an Authorization: Bearer <token> header");
  }

  let queries;
  try {
    let body;
    try {
      body = JSON.parse(await request.text());
    } catch (error) {
      throw new RequestError("request body is not valid JSON: " + error.message);
    }
    queries = parseBody(body);
  } catch (error) {
    if (error instanceof RequestError) return failure(400, 7400, error.message);
    throw error;
  }

  let result;
  try {
    result = match[3] === "raw" ? await runRaw(env.DB, queries) : await runQuery(env.DB, queries);
  } catch (error) {
    const message = error && typeof error.message === "string" ? error.message : String(error);
    console.error("local D1 worker: /" + match[3] + " failed with code 7500: " + message);
    return failure(400, 7500, message);
  }
  return envelope(200, result, []);
}

export default {
  async fetch(request, env) {
    try {
      return await handle(request, env);
    } catch (error) {
      console.error("local D1 worker: unexpected error:", error && error.stack ? error.stack : error);
      return failure(500, 7000, "internal error in the local D1 server: " + String(error));
    }
  },
};
`;

// Miniflare's Log writes with console.log; send its lines to stderr instead.
class StderrLog extends Log {
  log(message) {
    process.stderr.write(`${message}\n`);
  }
}

function pipeToStderr(stdout, stderr) {
  stdout.on("data", (chunk) => process.stderr.write(chunk));
  stderr.on("data", (chunk) => process.stderr.write(chunk));
}

function denyOutbound(request) {
  return new Response(`outbound network access is disabled in the local D1 server: ${request.url}`, {
    status: 403,
  });
}

async function main() {
  const options = parseArgs(process.argv.slice(2));

  // Miniflare keeps in-memory storage in a directory under os.tmpdir() and
  // deletes it without waiting during dispose(), so it would outlive
  // process.exit(). Point os.tmpdir() at a directory this process deletes itself.
  const scratchDir = fs.mkdtempSync(path.join(os.tmpdir(), "d1store-local-d1-"));
  process.env.TMPDIR = scratchDir;
  const removeScratchDir = () => fs.rmSync(scratchDir, { recursive: true, force: true });

  const signals = ["SIGTERM", "SIGINT"];
  const ownListeners = new Map(signals.map((name) => [name, process.listeners(name)]));
  const miniflare = new Miniflare({
    host: options.host,
    port: options.port,
    // Without this Miniflare downloads request.cf data from the internet.
    cf: false,
    telemetry: { enabled: false },
    logRequests: false,
    log: new StderrLog(LogLevel.WARN),
    handleRuntimeStdio: pipeToStderr,
    modules: true,
    script: WORKER_SOURCE,
    compatibilityDate: COMPATIBILITY_DATE,
    bindings: { ACCOUNT_ID: options.accountId, DATABASE_ID: options.databaseId },
    d1Databases: { DB: options.databaseId },
    d1Persist: options.persist ?? false,
    // The Worker needs no network, so any fetch() it makes gets a 403 from Node.
    outboundService: denyOutbound,
  });

  // Miniflare's own SIGTERM/SIGINT hook SIGKILLs workerd and exits at once
  // with code 128+signal, leaving workerd unreaped. Replace it with a handler
  // that awaits dispose(), so workerd has exited when node exits.
  for (const name of signals) {
    for (const listener of process.listeners(name)) {
      if (!ownListeners.get(name).includes(listener)) process.removeListener(name, listener);
    }
  }

  let stopping = null;
  const stop = (reason) => {
    if (stopping) return stopping;
    process.stderr.write(`local D1 server: stopping (${reason})\n`);
    stopping = miniflare
      .dispose()
      .catch((error) => {
        process.stderr.write(`local D1 server: dispose failed: ${error?.stack ?? error}\n`);
        process.exitCode = 1;
      })
      .finally(() => {
        removeScratchDir();
        process.exit();
      });
    return stopping;
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  process.stdin.on("end", () => stop("stdin closed"));
  process.stdin.on("error", () => stop("stdin error"));
  process.stdin.resume();

  let url;
  try {
    url = await miniflare.ready;
  } catch (error) {
    process.stderr.write(`local D1 server: failed to start: ${error?.stack ?? error}\n`);
    await miniflare.dispose().catch(() => {});
    removeScratchDir();
    process.exit(1);
  }
  if (stopping) return;

  // URL.port is empty for the scheme's default port (80 for http).
  const port = Number(url.port) || 80;
  const hostPart = options.host.includes(":") ? `[${options.host}]` : options.host;
  const baseUrl =
    `http://${hostPart}:${port}/client/v4/accounts/${options.accountId}` +
    `/d1/database/${options.databaseId}`;
  process.stdout.write(`${JSON.stringify({ base_url: baseUrl, port, pid: process.pid })}\n`);
}

main().catch((error) => {
  process.stderr.write(`local D1 server: ${error?.stack ?? error}\n`);
  process.exit(1);
});
