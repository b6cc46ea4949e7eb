// ActorError: every failure the client reports (mirrors keel::client::ClientError).
// group/code/message/metadata are exactly what the actor or the engine reported; failures
// on this side are in group "client":
//   client.invalid_argument   bad endpoint, name, key or option
//   client.connect_failed     the engine could not be reached
//   client.timeout            the call's deadline passed
//   client.connection_lost    a WebSocket closed with the call in flight (it may or may not
//                             have run)
//   client.closed             the connection was disposed
//   client.get_params_failed  the connection's getParams callback failed
//   client.bad_response       the engine answered with something that is not the protocol
//   client.protocol_error     a connection's WebSocket failed at the protocol level
//                             (errorFromProtocolClose); metadata { close_code }

export class ActorError extends Error {
  /**
   * @param {string} group
   * @param {string} code
   * @param {string} message
   * @param {unknown} [metadata]
   * @param {number} [httpStatus] the HTTP status when the error came in an HTTP response, else 0
   */
  constructor(group, code, message, metadata = undefined, httpStatus = 0, options = undefined) {
    super(message, options);
    this.name = "ActorError";
    this.group = group;
    this.code = code;
    this.metadata = metadata;
    this.httpStatus = httpStatus;
  }

  /** "group.code" */
  get id() {
    return `${this.group}.${this.code}`;
  }

  is(group, code) {
    return this.group === group && this.code === code;
  }

  toString() {
    return `${this.id}: ${this.message}`;
  }
}

export function clientError(code, message, options) {
  return new ActorError("client", code, message, undefined, 0, options);
}

// Errors that mean "the actor is not reachable at this id right now" (actors.md §4.2): a
// dynamic handle forgets its id and retries through the gateway's query form.
const SCHEDULING_CODES = new Set([
  "not_found",
  "starting",
  "stopping",
  "destroying",
  "not_configured",
  "dropped_reply",
  "destroyed_while_waiting_for_ready",
  "destroyed_during_creation",
]);

export function isSchedulingError(e) {
  return e instanceof ActorError && e.group === "actor" && SCHEDULING_CODES.has(e.code);
}

// actor.overloaded from the dispatch inbox: queue sends retry it.
export function isDispatchOverload(e) {
  if (!(e instanceof ActorError) || !e.is("actor", "overloaded")) return false;
  const m = e.metadata;
  if (m === null || typeof m !== "object") return false;
  const channel = m instanceof Map ? m.get("channel") : m.channel;
  return channel === "dispatch_inbox";
}

// "group.code" or "group.code#ray" close reasons as an error; null otherwise.
export function errorFromCloseReason(reason) {
  if (typeof reason !== "string") return null;
  let r = reason;
  const hash = r.indexOf("#");
  if (hash >= 0) r = r.slice(0, hash);
  const dot = r.indexOf(".");
  if (dot <= 0 || dot + 1 >= r.length) return null;
  if (!/^[a-z0-9_.]+$/.test(r)) return null;
  return new ActorError(r.slice(0, dot), r.slice(dot + 1), reason);
}

const PROTOCOL_FAULTS = new Map([
  [1002, "a WebSocket protocol error"],
  [1007, "invalid message data (a text message that is not UTF-8)"],
  [1009, "a message too big to take"],
]);

// A connection's WebSocket failed at the protocol level (RFC 6455 §7.4.1), as the C++
// client's client.protocol_error: closed with 1002 (protocol error), 1007 (a text message
// that is not UTF-8) or 1009 (a message over a size limit), whichever side detected it.
// Node's WebSocket reports a fault it detected itself as an error event naming it (`fault`)
// followed by a close with 1006; the code RFC 6455 gives that fault is then the one
// reported: 1007 for UTF-8, 1009 for a payload too large, else 1002. null for any other
// close.
export function errorFromProtocolClose(code, reason, fault = "") {
  let closeCode = code;
  if (code === 1006 && typeof fault === "string" && fault !== "") {
    if (/utf-?8/i.test(fault)) closeCode = 1007;
    else if (/too (large|big)|payload length/i.test(fault)) closeCode = 1009;
    else closeCode = 1002;
  }
  const what = PROTOCOL_FAULTS.get(closeCode);
  if (what === undefined) return null;
  const detail = closeCode === code ? (reason ? `, ${reason}` : "") : `, ${fault}`;
  return new ActorError("client", "protocol_error", `the WebSocket failed with ${what} (code ${code}${detail})`, { close_code: closeCode });
}
