// Verifies a flask-m2m access token with jose (https://github.com/panva/jose) against the
// server's published JWK set, as an RFC 9068 resource server written in JavaScript would.
// Run by tests/test_node_interop.py.
//
//   node verify.mjs '<JSON input>'   ->   one JSON object on stdout
//
// Input: {jwks_uri, token, issuer, audience, alg}. Output: {header, payload} when the token
// verifies, else {error: {code, message}} (a jose error code such as ERR_JWT_CLAIM_VALIDATION_FAILED).
import { createRemoteJWKSet, jwtVerify } from 'jose'

const input = JSON.parse(process.argv[2])
const jwks = createRemoteJWKSet(new URL(input.jwks_uri))
try {
  const { protectedHeader, payload } = await jwtVerify(input.token, jwks, {
    issuer: input.issuer,
    audience: input.audience,
    typ: 'at+jwt', // RFC 9068 §2.1 (jose also accepts "application/at+jwt")
    algorithms: [input.alg],
    requiredClaims: ['iss', 'exp', 'aud', 'sub', 'client_id', 'iat', 'jti'],
  })
  process.stdout.write(JSON.stringify({ header: protectedHeader, payload }))
} catch (err) {
  if (typeof err?.code !== 'string' || !err.code.startsWith('ERR_J')) throw err
  process.stdout.write(JSON.stringify({ error: { code: err.code, message: err.message } }))
}
