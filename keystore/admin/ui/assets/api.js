// The admin API client. The admin token lives in this module's variable and
// nowhere else: not in storage, cookies or URLs, so it ends with the tab
// (or with signOut) and no other page of the origin can read it.

let token = null;

// APIError is a refused or failed call, with the API's code and message.
export class APIError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function setToken(t) { token = t; }
export function clearToken() { token = null; }

// call sends one admin API request with the token as a bearer header and
// returns the decoded JSON answer (null for 204), or throws APIError.
export async function call(method, path, body) {
  if (token === null) {
    throw new APIError(401, 'unauthorized', 'not signed in');
  }
  const headers = { 'Authorization': 'Bearer ' + token, 'Accept': 'application/json' };
  const init = { method, headers, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new APIError(0, 'network', 'the admin API did not answer (' + e.message + ')');
  }
  if (resp.status === 204) {
    return null;
  }
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const code = data && typeof data.code === 'string' ? data.code : 'http_' + resp.status;
    const msg = data && typeof data.error === 'string' ? data.error : 'HTTP ' + resp.status;
    throw new APIError(resp.status, code, msg);
  }
  return data;
}

// query renders the non-empty params as a query string ("" for none).
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') {
      q.set(k, String(v));
    }
  }
  const s = q.toString();
  return s ? '?' + s : '';
}

export function keyPath(id, rest = '') {
  return '/v1/keys/' + encodeURIComponent(id) + rest;
}

// describe turns an error into a sentence for the page.
export function describe(err) {
  if (err instanceof APIError) {
    switch (err.code) {
      case 'insufficient_scope':
      case 'out_of_reach':
        return 'Not allowed with this token: ' + err.message + '.';
      case 'unauthorized':
        return 'The token was refused: sign in again.';
      default:
        return err.message + (err.status ? ' (' + err.status + ' ' + err.code + ')' : '');
    }
  }
  return String(err && err.message ? err.message : err);
}
