// Structured errors (actors.md §3.7): `group.code` + message (+ metadata).
//
// Throw a UserError (group "user") from an action to send its message, code and metadata
// to the client as they are; any other error reaches clients as
// `rivetkit.internal_error` and is logged by the runtime. Errors the runtime raises
// (KV, SQL, queue, …) are ActorErrors with their own group and code.
export class ActorError extends Error {
  constructor(group, code, message, { metadata, public: isPublic = true } = {}) {
    super(message);
    this.name = "ActorError";
    this.group = group;
    this.code = code;
    if (metadata !== undefined) this.metadata = metadata;
    this.public = isPublic;
  }
  // "group.code"
  get id() {
    return `${this.group}.${this.code}`;
  }
}

export class UserError extends ActorError {
  constructor(message, { code = "user_error", metadata } = {}) {
    super("user", code, message, { metadata });
    this.name = "UserError";
  }
}
