// Mint JWTs with an independent library (jose) for tests/jwt/run.sh: writes the keys (secret, PEM
// files, a JWKS), `now` and cases.tsv (name, keyset, expected verdict, token) into the directory
// given as the only argument. jwt_cases (tests/jwt/verify_cases.c) checks each with lg_jwt_verify.
//
// Expected verdicts: "ok" or "ok:<sub>" (valid, and the sub luagent must report), else the exact
// reason lg_jwt_verify gives (include/luagent/jwt.h).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHmac, randomBytes } from 'node:crypto';
import * as jose from 'jose';

const out = process.argv[2];
if (!out) { console.error('usage: node mint.mjs OUTDIR'); process.exit(2); }

const ISS = 'https://issuer.test', AUD = 'luagent';
const now = Math.floor(Date.now() / 1000);
const secret = randomBytes(32).toString('hex'); // 64 ASCII bytes
const secretKey = new TextEncoder().encode(secret);

const rsa1 = await jose.generateKeyPair('RS256', { modulusLength: 2048, extractable: true });
const rsa2 = await jose.generateKeyPair('RS256', { modulusLength: 2048, extractable: true });
const ec1 = await jose.generateKeyPair('ES256', { extractable: true });
const ec2 = await jose.generateKeyPair('ES256', { extractable: true });
const rsaPem = await jose.exportSPKI(rsa1.publicKey);
const ecPem = await jose.exportSPKI(ec1.publicKey);
const jwk = async (k, kid, alg) => ({ ...(await jose.exportJWK(k)), kid, alg, use: 'sig' });
const jwks = { keys: [await jwk(rsa1.publicKey, 'rsa-1', 'RS256'), await jwk(rsa2.publicKey, 'rsa-2', 'RS256'),
                      await jwk(ec1.publicKey, 'ec-1', 'ES256')] };

writeFileSync(join(out, 'secret.txt'), secret);
writeFileSync(join(out, 'rsa.pem'), rsaPem);
writeFileSync(join(out, 'ec.pem'), ecPem);
writeFileSync(join(out, 'jwks.json'), JSON.stringify(jwks, null, 2));
writeFileSync(join(out, 'now.txt'), String(now));

const b64u = (x) => Buffer.from(x).toString('base64url');
const std = { sub: 'user-1', role: 'operator' };

// A JWT with the standard claims (overridable) and the given header.
async function sign(key, header, claims = {}, opts = {}) {
  const c = { ...std, ...claims };
  const j = new jose.SignJWT(c).setProtectedHeader(header).setIssuedAt(opts.iat ?? now);
  if (opts.iss !== null) j.setIssuer(opts.iss ?? ISS);
  if (opts.aud !== null) j.setAudience(opts.aud ?? AUD);
  if (opts.exp !== null) j.setExpirationTime(opts.exp ?? now + 600);
  if (opts.nbf !== undefined) j.setNotBefore(opts.nbf);
  return j.sign(key);
}

// Hand-made HS256 (for headers jose refuses to produce).
function handHs(header, payload, key) {
  const input = `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(payload))}`;
  return `${input}.${createHmac('sha256', key).update(input).digest('base64url')}`;
}

const claimsObj = { ...std, iss: ISS, aud: AUD, iat: now, exp: now + 600 };
const cases = [];
const add = (name, keyset, expect, token) => cases.push([name, keyset, expect, token]);

// good tokens
add('HS256 valid', 'hs', 'ok:user-1', await sign(secretKey, { alg: 'HS256', typ: 'JWT' }));
add('RS256 valid (PEM file)', 'rsa_pem', 'ok:user-1', await sign(rsa1.privateKey, { alg: 'RS256' }));
add('RS256 valid (PEM text)', 'rsa_text', 'ok:user-1', await sign(rsa1.privateKey, { alg: 'RS256' }));
add('ES256 valid (PEM file)', 'ec_pem', 'ok:user-1', await sign(ec1.privateKey, { alg: 'ES256' }));
add('RS256 valid (JWKS kid rsa-1)', 'jwks', 'ok:user-1', await sign(rsa1.privateKey, { alg: 'RS256', kid: 'rsa-1' }));
add('RS256 valid (JWKS kid rsa-2)', 'jwks', 'ok:alice', await sign(rsa2.privateKey, { alg: 'RS256', kid: 'rsa-2' }, { sub: 'alice' }));
add('ES256 valid (JWKS kid ec-1)', 'jwks', 'ok:user-1', await sign(ec1.privateKey, { alg: 'ES256', kid: 'ec-1' }));
add('ES256 valid without kid (one EC key in the JWKS)', 'jwks', 'ok:user-1', await sign(ec1.privateKey, { alg: 'ES256' }));
add('aud array containing ours', 'hs', 'ok:user-1', await sign(secretKey, { alg: 'HS256' }, {}, { aud: ['other', AUD] }));
add('expired 30 s ago (within leeway)', 'hs', 'ok:user-1', await sign(secretKey, { alg: 'HS256' }, {}, { exp: now - 30 }));
add('unicode sub', 'ec_pem', 'ok:\u00e9l\u00e8ve', await sign(ec1.privateKey, { alg: 'ES256' }, { sub: '\u00e9l\u00e8ve' }));

// bad tokens
add('expired', 'hs', 'expired', await sign(secretKey, { alg: 'HS256' }, {}, { exp: now - 120 }));
add('expired (ES256)', 'ec_pem', 'expired', await sign(ec1.privateKey, { alg: 'ES256' }, {}, { exp: now - 3600 }));
add('nbf in the future', 'hs', 'not yet valid', await sign(secretKey, { alg: 'HS256' }, {}, { nbf: now + 300 }));
add('iat in the future', 'hs', 'issued in the future', await sign(secretKey, { alg: 'HS256' }, {}, { iat: now + 300 }));
add('no exp', 'hs', 'missing exp', await sign(secretKey, { alg: 'HS256' }, {}, { exp: null }));
add('wrong aud', 'rsa_pem', 'audience mismatch', await sign(rsa1.privateKey, { alg: 'RS256' }, {}, { aud: 'someone-else' }));
add('aud array without ours', 'hs', 'audience mismatch', await sign(secretKey, { alg: 'HS256' }, {}, { aud: ['a', 'b'] }));
add('no aud', 'hs', 'audience mismatch', await sign(secretKey, { alg: 'HS256' }, {}, { aud: null }));
add('wrong iss', 'ec_pem', 'issuer mismatch', await sign(ec1.privateKey, { alg: 'ES256' }, {}, { iss: 'https://evil.test' }));
add('alg none (jose UnsecuredJWT)', 'rsa_pem', 'algorithm not allowed for this key',
    new jose.UnsecuredJWT(claimsObj).encode());
add('alg none (by hand, HS secret configured)', 'hs', 'algorithm not allowed for this key',
    `${b64u('{"alg":"none","typ":"JWT"}')}.${b64u(JSON.stringify(claimsObj))}.`);
add('HS256 signed with the RSA public key PEM', 'rsa_pem', 'algorithm not allowed for this key',
    handHs({ alg: 'HS256', typ: 'JWT' }, claimsObj, rsaPem));
add('HS256 signed with the EC public key PEM (JWKS)', 'jwks', 'algorithm not allowed for this key',
    handHs({ alg: 'HS256', kid: 'ec-1' }, claimsObj, ecPem));
add('HS256 signed with the PEM when a secret is set too', 'hs', 'bad signature', handHs({ alg: 'HS256' }, claimsObj, rsaPem));
add('ES256 token for an RSA key', 'rsa_pem', 'algorithm not allowed for this key', await sign(ec1.privateKey, { alg: 'ES256' }));
add('RS256 token for an EC key', 'ec_pem', 'algorithm not allowed for this key', await sign(rsa1.privateKey, { alg: 'RS256' }));
add('RS384 with the right RSA key', 'rsa_pem', 'algorithm not allowed for this key', await sign(rsa1.privateKey, { alg: 'RS384' }));
add('PS256 with the right RSA key', 'rsa_pem', 'algorithm not allowed for this key', await sign(rsa1.privateKey, { alg: 'PS256' }));
add('HS512 with the secret', 'hs', 'algorithm not allowed for this key', await sign(secretKey, { alg: 'HS512' }));
add('ES256 by another EC key', 'ec_pem', 'bad signature', await sign(ec2.privateKey, { alg: 'ES256' }));
add('RS256 kid rsa-1 signed by rsa-2', 'jwks', 'bad signature', await sign(rsa2.privateKey, { alg: 'RS256', kid: 'rsa-1' }));
add('unknown kid', 'jwks', 'unknown key id', await sign(rsa1.privateKey, { alg: 'RS256', kid: 'rsa-9' }));
add('RS256 without kid, two RSA keys', 'jwks', 'key id required', await sign(rsa1.privateKey, { alg: 'RS256' }));
add('ES256 with the kid of an RSA key', 'jwks', 'algorithm not allowed for this key', await sign(ec1.privateKey, { alg: 'ES256', kid: 'rsa-1' }));
add('crit header', 'hs', 'unsupported critical header', handHs({ alg: 'HS256', crit: ['exp'] }, claimsObj, secret));
add('wrong secret', 'hs', 'bad signature', await sign(new TextEncoder().encode('x'.repeat(64)), { alg: 'HS256' }));
{
  const good = await sign(ec1.privateKey, { alg: 'ES256' });
  const [h, , s] = good.split('.');
  add('tampered payload (ES256)', 'ec_pem', 'bad signature', `${h}.${b64u(JSON.stringify({ ...claimsObj, role: 'admin' }))}.${s}`);
  add('ES256 signature as DER', 'ec_pem', 'bad signature', (() => {
    const raw = Buffer.from(s, 'base64url');
    const int = (b) => { let i = 0; while (i < b.length - 1 && b[i] === 0) i++; b = b.subarray(i); return b[0] & 0x80 ? Buffer.concat([Buffer.from([0]), b]) : b; };
    const r = int(raw.subarray(0, 32)), ss = int(raw.subarray(32));
    const body = Buffer.concat([Buffer.from([2, r.length]), r, Buffer.from([2, ss.length]), ss]);
    return `${h}.${good.split('.')[1]}.${Buffer.concat([Buffer.from([0x30, body.length]), body]).toString('base64url')}`;
  })());
  add('ES256 signature of 63 bytes', 'ec_pem', 'bad signature', `${h}.${good.split('.')[1]}.${b64u(Buffer.from(s, 'base64url').subarray(0, 63))}`);
  add('two parts', 'ec_pem', 'malformed token', good.split('.').slice(0, 2).join('.'));
  add('four parts', 'ec_pem', 'malformed token', `${good}.${s}`);
  add('padded base64', 'ec_pem', 'malformed token', `${h}==.${good.split('.')[1]}.${s}`);
  add('header not JSON', 'ec_pem', 'malformed token', `${b64u('alg: ES256')}.${good.split('.')[1]}.${s}`);
}
const hsGood = await sign(secretKey, { alg: 'HS256' });
add('tampered header (HS256)', 'hs', 'bad signature', `${b64u('{"alg":"HS256","typ":"JWT"}')}.${hsGood.split('.').slice(1).join('.')}`);
add('oversized token', 'hs', 'token too large', await sign(secretKey, { alg: 'HS256' }, { pad: 'x'.repeat(9000) }));

writeFileSync(join(out, 'cases.tsv'), cases.map((c) => c.join('\t')).join('\n') + '\n');
console.log(`tests/jwt: jose ${jose.cryptoRuntime} minted ${cases.length} tokens into ${out}`);
