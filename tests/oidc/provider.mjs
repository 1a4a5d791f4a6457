// Test-only OpenID Provider with CIBA (poll mode), started by the Python tests as
//   node tests/oidc/provider.mjs
// Env: OP_PORT, CONTROL_PORT, CLIENT_ID, CLIENT_SECRET, ACCOUNTS ("alice,bob").
// Everything (keys, requests, grants) lives in memory and dies with the process.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import http from 'node:http';
import Provider, { errors } from 'oidc-provider';

const env = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`missing env ${name}`);
    process.exit(2);
  }
  return value;
};
const OP_PORT = Number(env('OP_PORT'));
const CONTROL_PORT = Number(env('CONTROL_PORT'));
const ACCOUNTS = new Set(env('ACCOUNTS').split(',').map((s) => s.trim()).filter(Boolean));

// The library never sends `interval` in the backchannel response and never answers
// slow_down for CIBA, so clients would fall back to the spec default of 5 s.
// We add interval=1 ourselves (see the middleware below) so tests poll quickly.
const POLL_INTERVAL = 1;
// Default lifetime of a CIBA request; requested_expiry may shorten or lengthen it up to MAX.
const DEFAULT_EXPIRES_IN = 120;
const MAX_EXPIRES_IN = 600;

// In-memory RSA key, so the id_token can use the default RS256 and no dev keys are used.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'test-key', alg: 'RS256', use: 'sig' };

const now = () => Math.floor(Date.now() / 1000);

// What the control server lists: auth_req_id -> { id, account, binding_message, scope, exp }.
const pending = new Map();

// Printable = no Unicode "Other" category (controls, format chars, unassigned, surrogates).
const PRINTABLE = /^[^\p{C}]+$/u;

const provider = new Provider(`http://127.0.0.1:${OP_PORT}`, {
  clients: [{
    client_id: env('CLIENT_ID'),
    client_secret: env('CLIENT_SECRET'),
    // The library accepts client_secret_post too for a client registered as _basic.
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['urn:openid:params:grant-type:ciba'],
    response_types: [],
    redirect_uris: [],
    backchannel_token_delivery_mode: 'poll',
  }],
  jwks: { keys: [jwk] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  // Only accounts from ACCOUNTS exist; sub is the account id itself.
  findAccount: (ctx, id) => (ACCOUNTS.has(id) ? { accountId: id, claims: () => ({ sub: id }) } : undefined),
  features: {
    devInteractions: { enabled: false }, // no browser flow here, only CIBA
    ciba: {
      enabled: true,
      deliveryModes: ['poll'],
      // Returning undefined makes the library answer `unknown_user_id`.
      processLoginHint: (ctx, hint) => (ACCOUNTS.has(hint) ? hint : undefined),
      processLoginHintToken: () => undefined,
      // user_code and request_context are not used; the defaults throw "not implemented".
      verifyUserCode: () => {},
      validateRequestContext: () => {},
      // The default allows only 1..20 chars of [a-zA-Z0-9-._+/!?#]; our messages are longer.
      validateBindingMessage: (ctx, message) => {
        if (message === undefined) return;
        if ([...message].length > 200 || !PRINTABLE.test(message)) {
          throw new errors.InvalidBindingMessage('binding_message must be 1..200 printable characters');
        }
      },
      // Instead of pushing to a device, remember the request for the control server.
      triggerAuthenticationDevice: (ctx, request, account) => {
        pending.set(request.jti, {
          id: request.jti,
          account: account.accountId,
          binding_message: request.params.binding_message ?? null,
          scope: request.scope,
          // exp is only in the stored payload, not on this instance; expiration = TTL in seconds.
          exp: request.exp ?? now() + request.expiration,
        });
      },
    },
  },
  ttl: {
    BackchannelAuthenticationRequest: (ctx) => {
      const requested = Number(ctx?.oidc?.params.requested_expiry);
      return requested > 0 ? Math.min(requested, MAX_EXPIRES_IN) : DEFAULT_EXPIRES_IN;
    },
    // Explicit values also silence the library's "you SHOULD change" notices.
    Grant: 3600,
    AccessToken: 3600,
    IdToken: 3600,
  },
});

// Post-process the backchannel response to advertise the short polling interval.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.oidc?.route === 'backchannel_authentication' && ctx.status === 200 && ctx.body?.auth_req_id) {
    ctx.body.interval = POLL_INTERVAL;
  }
});

for (const event of ['server_error', 'backchannel_authentication.error', 'grant.error']) {
  provider.on(event, (ctx, err) => console.error(`[op] ${event}: ${err?.error ?? ''} ${err?.error_description ?? err?.message ?? err}`));
}

const send = (res, status, body) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
};

// Test control server: plays the end-user's authentication device.
const control = http.createServer(async (req, res) => {
  try {
    for (const [id, entry] of pending) if (entry.exp <= now()) pending.delete(id); // expired: gone
    const url = new URL(req.url, 'http://x');
    const m = url.pathname.match(/^\/(approve|deny)\/([^/]+)$/);
    if (req.method === 'GET' && url.pathname === '/pending') {
      return send(res, 200, [...pending.values()].map(({ exp, ...item }) => item));
    }
    if (req.method !== 'POST' || !m) return send(res, 404, { error: 'not_found' });
    const [, action, id] = m;
    const entry = pending.get(id);
    if (!entry) return send(res, 404, { error: 'unknown_id' });
    pending.delete(id);
    let result;
    if (action === 'approve') {
      const request = await provider.BackchannelAuthenticationRequest.find(id, { ignoreExpiration: true });
      if (!request) return send(res, 404, { error: 'unknown_id' });
      result = new provider.Grant({ accountId: request.accountId, clientId: request.clientId });
      result.addOIDCScope(request.scope); // grant what was asked (always includes openid)
      await result.save();
    } else {
      result = new errors.AccessDenied('end-user denied the request');
    }
    await provider.backchannelResult(id, result, { authTime: now() });
    return send(res, 200, { id, result: action === 'approve' ? 'approved' : 'denied' });
  } catch (err) {
    console.error('[control]', err);
    return send(res, 500, { error: String(err?.message ?? err) });
  }
});

// READY only after both servers accept connections.
await Promise.all([
  new Promise((resolve) => provider.listen(OP_PORT, '127.0.0.1', resolve)),
  new Promise((resolve) => control.listen(CONTROL_PORT, '127.0.0.1', resolve)),
]);
console.log('READY');
