// An OAuth 2.0 client written with oauth4webapi (https://github.com/panva/oauth4webapi) against
// a flask-m2m server: RFC 8414 discovery, the client credentials grant with client_secret_basic
// or private_key_jwt (RFC 7523), optionally DPoP-bound (RFC 9449, nonces retried once), then
// requests to protected resources with the token. Run by tests/test_node_interop.py.
//
//   node client.mjs '<JSON input>'   ->   one JSON object on stdout
//
// Input: {issuer, client_id, auth: {method: "client_secret_basic", secret} |
//         {method: "private_key_jwt", jwk, alg}, scope?, resources?: [uri], dpop?: alg,
//         requests?: [{url, scheme?: "DPoP" | "Bearer", audience?}], introspect_and_revoke?}
// A request with an `audience` is also checked on its way out as an RFC 9068 resource server
// written with oauth4webapi would: validateJwtAccessToken (and the DPoP proof, §7.1).
// introspect_and_revoke: introspect the token (RFC 7662), revoke it (RFC 7009), introspect again.
// Expected protocol errors (a refused token request, a challenge) are reported in the output;
// anything else fails the process.
import * as oauth from 'oauth4webapi'
import { importJWK } from 'jose'

const input = JSON.parse(process.argv[2])
const issuer = new URL(input.issuer)

// oauth4webapi refuses plain http; the tests serve on loopback only, so allow it just there.
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]'])
function http(url) {
  if (url.protocol === 'http:' && !LOOPBACK.has(url.hostname)) {
    throw new Error(`refusing plain http to ${url.host}`)
  }
  return { [oauth.allowInsecureRequests]: url.protocol === 'http:' }
}

const as = await oauth.processDiscoveryResponse(
  issuer,
  await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...http(issuer) }),
)
const client = { client_id: input.client_id }

let clientAuth
if (input.auth.method === 'private_key_jwt') {
  const key = await importJWK(input.auth.jwk, input.auth.alg)
  clientAuth = oauth.PrivateKeyJwt({ key, kid: input.auth.jwk.kid })
} else if (input.auth.method === 'client_secret_basic') {
  clientAuth = oauth.ClientSecretBasic(input.auth.secret)
} else {
  throw new Error(`unknown client authentication ${input.auth.method}`)
}

let DPoP
if (input.dpop) {
  DPoP = oauth.DPoP(client, await oauth.generateKeyPair(input.dpop))
}

const out = { metadata: as, nonce_retries: {}, requests: [] }
if (DPoP) {
  out.jkt = await DPoP.calculateThumbprint()
}

// RFC 9449 §8-9: a server may ask for its nonce; the DPoP handle keeps the nonce the answer
// carried, so one retry sends a proof with it.
async function retryingNonce(name, attempt) {
  out.nonce_retries[name] = 0
  try {
    return await attempt()
  } catch (err) {
    if (!DPoP || !oauth.isDPoPNonceError(err)) throw err
    out.nonce_retries[name] = 1
    return await attempt()
  }
}

const parameters = new URLSearchParams()
if (input.scope) parameters.set('scope', input.scope)
for (const resource of input.resources ?? []) parameters.append('resource', resource)

let token
try {
  token = await retryingNonce('token', async () => {
    const response = await oauth.clientCredentialsGrantRequest(
      as, client, clientAuth, parameters, { DPoP, ...http(new URL(as.token_endpoint)) },
    )
    return oauth.processClientCredentialsResponse(as, client, response)
  })
} catch (err) {
  if (err instanceof oauth.ResponseBodyError) {
    out.token_error = { status: err.status, error: err.error }
  } else if (err instanceof oauth.WWWAuthenticateChallengeError) {
    // RFC 6749 §5.2: 401 and a challenge after a failed Authorization header
    const body = await err.response.json()
    out.token_error = { status: err.status, error: body.error, challenges: err.cause }
  } else {
    throw err
  }
  process.stdout.write(JSON.stringify(out))
  process.exit(0)
}
out.token = token

for (const { url: raw, scheme = DPoP ? 'DPoP' : 'Bearer', audience } of input.requests ?? []) {
  const url = new URL(raw)
  const result = { url: raw, scheme }
  // Without the DPoP handle oauth4webapi sends the token as Bearer.
  const options = { DPoP: scheme === 'DPoP' ? DPoP : undefined, ...http(url) }
  if (audience) {
    options[oauth.customFetch] = async (href, init) => {
      try {
        const claims = await oauth.validateJwtAccessToken(
          as, new Request(href, init), audience, http(new URL(as.jwks_uri)),
        )
        result.validated = { client_id: claims.client_id, scope: claims.scope, cnf: claims.cnf }
      } catch (err) {
        result.validation_error = { name: err.name, code: err.code, message: err.message }
      }
      return fetch(href, init)
    }
  }
  try {
    const response = await retryingNonce(raw, () =>
      oauth.protectedResourceRequest(token.access_token, 'GET', url, new Headers(), null, options),
    )
    result.status = response.status
    result.body = await response.json()
  } catch (err) {
    if (!(err instanceof oauth.WWWAuthenticateChallengeError)) throw err
    result.status = err.status
    result.challenges = err.cause
    result.body = await err.response.json()
  }
  result.nonce_retries = out.nonce_retries[raw]
  out.requests.push(result)
}

if (input.introspect_and_revoke) {
  const endpoint = http(new URL(as.introspection_endpoint))
  const introspect = async () =>
    oauth.processIntrospectionResponse(as, client, await oauth.introspectionRequest(
      as, client, clientAuth, token.access_token, endpoint,
    ))
  out.introspected = await introspect()
  await oauth.processRevocationResponse(await oauth.revocationRequest(
    as, client, clientAuth, token.access_token, http(new URL(as.revocation_endpoint)),
  ))
  out.introspected_after_revocation = await introspect()
}

process.stdout.write(JSON.stringify(out))
