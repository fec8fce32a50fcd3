// Makes a client key pair with WebCrypto (through oauth4webapi's generateKeyPair), as a Node
// service would, and prints its public JWK as WebCrypto exports it (with `key_ops` and `ext`;
// `alg` for RSA), its public key as PEM (SPKI) and its private JWK. Run by
// tests/test_node_interop.py.
//
//   node keygen.mjs '{"alg": "ES256", "kid": "worker-1"}'   ->   {public_jwk, public_pem, private_jwk}
import * as oauth from 'oauth4webapi'
import { exportSPKI } from 'jose'

const { alg, kid } = JSON.parse(process.argv[2])
const { publicKey, privateKey } = await oauth.generateKeyPair(alg, { extractable: true })
const publicJwk = { ...(await crypto.subtle.exportKey('jwk', publicKey)), kid }
const privateJwk = { ...(await crypto.subtle.exportKey('jwk', privateKey)), kid }
process.stdout.write(JSON.stringify({
  public_jwk: publicJwk,
  public_pem: await exportSPKI(publicKey),
  private_jwk: privateJwk,
}))
