// Checks the options of serve() and serverless() before anything starts.
import { ActorError } from "./errors.js";

// The options serve() takes, by kind; serverless() adds its own (extra).
const SERVE_OPTIONS = {
  string: ["endpoint", "token", "namespace", "pool", "envoyKey", "inspectorToken", "sqliteBackend", "logLevel"],
  number: ["version", "connectTimeoutMs", "protocolVersion"],
  boolean: ["handleSignals", "waitForConnection"],
  function: ["logger", "WebSocket"],
  object: ["env", "wasmModule"],
};
const PROTOCOL_VERSIONS = [2, 3, 4];
const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "off"];

// Refuses (config.invalid_options) what would otherwise be ignored or fail later: an
// unknown key (a typo such as `enpoint` would silently connect to the default endpoint),
// or a value of the wrong kind. `undefined` means "not given", as for every option.
export function checkOptions(call, options, extra = {}) {
  const invalid = (message) => new ActorError("config", "invalid_options", `${call}: ${message}`);
  if (options === null || typeof options !== "object" || Array.isArray(options)) {
    throw invalid("options must be an object");
  }
  const kinds = new Map();
  for (const table of [SERVE_OPTIONS, extra]) {
    for (const [kind, keys] of Object.entries(table)) for (const key of keys) kinds.set(key, kind);
  }
  for (const [key, value] of Object.entries(options)) {
    const kind = kinds.get(key);
    if (kind === undefined) {
      throw invalid(`unknown option \`${key}\`; valid options: ${[...kinds.keys()].sort().join(", ")}`);
    }
    if (value === undefined) continue;
    const ok = kind === "number" ? typeof value === "number" && Number.isFinite(value) && value >= 0
      : kind === "object" ? value !== null && typeof value === "object"
      : typeof value === kind;
    if (!ok) throw invalid(`\`${key}\` must be a ${kind === "number" ? "finite number >= 0" : kind}, got ${typeof value}`);
  }
  if (options.protocolVersion !== undefined && !PROTOCOL_VERSIONS.includes(options.protocolVersion)) {
    throw invalid(`\`protocolVersion\` must be one of ${PROTOCOL_VERSIONS.join(", ")}, got ${options.protocolVersion}`);
  }
  if (options.logLevel !== undefined && !LOG_LEVELS.includes(options.logLevel)) {
    throw invalid(`\`logLevel\` must be one of ${LOG_LEVELS.join(", ")}, got "${options.logLevel}"`);
  }
}
