// The REST API, as the console uses it: a session token from POST /v3/auth/console-tokens, sent as
// X-Auth-Token on every call. Errors are always {error_code, error_msg}; they become ApiError.

const KEY = "opencbr.session";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `request failed (HTTP ${status})`);
    this.status = status;
    this.code = code || "";
  }
}

export const session = {
  get() {
    try {
      const s = JSON.parse(sessionStorage.getItem(KEY) || "null");
      if (s && s.expires_at && parseTime(s.expires_at) <= new Date()) {
        sessionStorage.removeItem(KEY);
        return null;
      }
      return s;
    } catch {
      return null;
    }
  },
  set(s) { sessionStorage.setItem(KEY, JSON.stringify(s)); },
  clear() { sessionStorage.removeItem(KEY); },
};

/** API times are UTC; some carry no zone designator ("2026-01-02T03:04:05.123456"). */
export function parseTime(value) {
  if (!value) return null;
  if (value instanceof Date) return value;
  let v = String(value).trim().replace(" ", "T");
  if (!/[zZ]|[+-]\d\d:?\d\d$/.test(v)) v += "Z";
  v = v.replace(/(\.\d{3})\d+/, "$1");
  const d = new Date(v);
  return isNaN(d) ? null : d;
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

async function readError(resp) {
  let body = null;
  try { body = await resp.json(); } catch { /* not JSON */ }
  if (body && (body.error_msg || body.error_code)) return new ApiError(resp.status, body.error_code, body.error_msg);
  if (body && body.detail) {
    const d = Array.isArray(body.detail)
      ? body.detail.map((x) => `${(x.loc || []).slice(1).join(".")}: ${x.msg}`).join("; ")
      : String(body.detail);
    return new ApiError(resp.status, "", d);
  }
  return new ApiError(resp.status, "", `the server answered HTTP ${resp.status} ${resp.statusText || ""}`.trim());
}

/** Sign in with an AK/SK pair; stores and returns the session. */
export async function signIn(accessKey, secretKey, projectId) {
  const body = { access_key: accessKey, secret_key: secretKey };
  if (projectId) body.project_id = projectId;
  let resp;
  try {
    resp = await fetch("/v3/auth/console-tokens", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, "", `cannot reach the OpenCBR server (${e.message})`);
  }
  if (!resp.ok) throw await readError(resp);
  const s = await resp.json();
  session.set(s);
  return s;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === "") continue;
    if (Array.isArray(v)) v.forEach((x) => q.append(k, x));
    else q.append(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

async function request(method, path, { body, params, raw } = {}) {
  const s = session.get();
  if (!s) {
    onUnauthorized("Your session has ended; sign in again.");
    throw new ApiError(401, "APIGW.0301", "Your session has ended; sign in again.");
  }
  const headers = { "X-Auth-Token": s.token };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(`/v3/${s.project_id}${path}${query(params)}`, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, "", `cannot reach the OpenCBR server (${e.message})`);
  }
  if (!resp.ok) {
    const err = await readError(resp);
    if (resp.status === 401) onUnauthorized(err.message);
    throw err;
  }
  if (raw) return resp;
  if (resp.status === 204) return {};
  const text = await resp.text();
  return text ? JSON.parse(text) : {};
}

export const api = {
  get: (path, params) => request("GET", path, { params }),
  post: (path, body = {}) => request("POST", path, { body }),
  put: (path, body = {}) => request("PUT", path, { body }),
  del: (path) => request("DELETE", path),
  raw: (path) => request("GET", path, { raw: true }),
};

export async function health() {
  try {
    const r = await fetch("/health");
    return r.ok ? await r.json() : null;
  } catch {
    return null;
  }
}
