'use strict';
// Test PKI generated with the `openssl` CLI into a temporary directory, once per test process
// (memoised; removed when the process exits). EC P-256 keys keep it fast (~25 openssl runs, well
// under a second). Everything is written as files; `*Pem` fields hold the same text.
//
//   ca            self-signed root "koatty_serve Test CA"
//   server        leaf signed by ca, CN=localhost, SAN DNS:localhost + IP:127.0.0.1, EKU serverAuth
//                 (PKCS#8 key; also encKey = the same key as encrypted PKCS#8 (aes-256-cbc) with
//                 `passphrase`, and sec1Key = the same key as SEC1 "EC PRIVATE KEY")
//   reload        cert2: the server key's second cert (another serial); key3/cert3: a new key + cert
//   client        CN=test-client signed by ca, EKU clientAuth
//   otherCa       another self-signed root; otherClient: CN=rogue-client signed by otherCa
//   mismatchKey   a P-256 key that belongs to no certificate
//   chain         leaf signed by an intermediate CA (signed by ca); cert = leaf + intermediate
//   rsaServer()   lazily: RSA-2048 server cert with a PKCS#1 "RSA PRIVATE KEY" (slower, on demand)
//
// Usage: const { getCerts } = require('./certs'); const c = getCerts(); c.server.cert (path), …
const { execFileSync } = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');

const PASSPHRASE = 'koatty-test-passphrase';

const OPENSSL_CNF = `
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[v3_intermediate]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[v3_client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
`;

let cached = null;

function openssl(dir, args) {
  try {
    return execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  } catch (err) {
    const detail = err.stderr ? String(err.stderr) : err.message;
    throw new Error(`openssl ${args.join(' ')} failed: ${detail}`);
  }
}

function randomSerial() {
  const b = crypto.randomBytes(8);
  b[0] = (b[0] & 0x7f) | 0x10; // positive, no leading zero nibble
  return '0x' + b.toString('hex');
}

function makeTools(dir) {
  const cnf = path.join(dir, 'openssl.cnf');
  fs.writeFileSync(cnf, OPENSSL_CNF);
  const p = (name) => path.join(dir, name);

  function ecKey(name) {
    openssl(dir, ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', p(name)]);
    return p(name);
  }

  function selfSignedCa(keyName, certName, cn) {
    const key = ecKey(keyName);
    openssl(dir, ['req', '-x509', '-new', '-config', cnf, '-key', key, '-subj', `/CN=${cn}`, '-days', '3650', '-sha256',
      '-extensions', 'v3_ca', '-set_serial', randomSerial(), '-out', p(certName)]);
    return { key, cert: p(certName) };
  }

  // A cert for `key` with subject `cn` signed by `issuer` ({key, cert}) using extension section `ext`.
  function issue({ key, certName, cn, issuer, ext, serial = randomSerial() }) {
    const csr = p(`${certName}.csr`);
    openssl(dir, ['req', '-new', '-config', cnf, '-key', key, '-subj', `/CN=${cn}`, '-out', csr]);
    openssl(dir, ['x509', '-req', '-in', csr, '-CA', issuer.cert, '-CAkey', issuer.key, '-set_serial', serial,
      '-days', '825', '-sha256', '-extfile', cnf, '-extensions', ext, '-out', p(certName)]);
    return p(certName);
  }

  return { p, ecKey, selfSignedCa, issue };
}

function withPem(entry) {
  const out = { ...entry };
  for (const [k, v] of Object.entries(entry)) {
    if (typeof v === 'string' && (k === 'key' || k === 'cert' || k.endsWith('Key') || k.endsWith('Cert') || /^(key|cert)\d+$/.test(k))) {
      out[`${k}Pem`] = fs.readFileSync(v, 'utf8');
    }
  }
  return out;
}

/** Serial number as node prints it (X509Certificate#serialNumber / getPeerCertificate().serialNumber). */
function serialOf(certPath) {
  const pem = fs.readFileSync(certPath, 'utf8');
  return new crypto.X509Certificate(pem).serialNumber;
}

function generate() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'koatty-serve-certs-'));
  process.on('exit', () => {
    try { fs.rmSync(dir, { recursive: true, force: true }); } catch { /* ignore */ }
  });
  const t = makeTools(dir);

  const ca = t.selfSignedCa('ca.key', 'ca.crt', 'koatty_serve Test CA');
  const otherCa = t.selfSignedCa('other-ca.key', 'other-ca.crt', 'Other Test CA');

  const serverKey = t.ecKey('server.key');
  const serverCert = t.issue({ key: serverKey, certName: 'server.crt', cn: 'localhost', issuer: ca, ext: 'v3_server' });
  const encKey = t.p('server.enc.key');
  openssl(dir, ['pkcs8', '-topk8', '-v2', 'aes-256-cbc', '-in', serverKey, '-out', encKey, '-passout', `pass:${PASSPHRASE}`]);
  const sec1Key = t.p('server.sec1.key');
  openssl(dir, ['ec', '-in', serverKey, '-out', sec1Key]);

  // For certificate reload: the same key with another serial, and a whole new key + cert.
  const cert2 = t.issue({ key: serverKey, certName: 'server2.crt', cn: 'localhost', issuer: ca, ext: 'v3_server' });
  const key3 = t.ecKey('server3.key');
  const cert3 = t.issue({ key: key3, certName: 'server3.crt', cn: 'localhost', issuer: ca, ext: 'v3_server' });

  const clientKey = t.ecKey('client.key');
  const clientCert = t.issue({ key: clientKey, certName: 'client.crt', cn: 'test-client', issuer: ca, ext: 'v3_client' });
  const otherClientKey = t.ecKey('other-client.key');
  const otherClientCert = t.issue({ key: otherClientKey, certName: 'other-client.crt', cn: 'rogue-client', issuer: otherCa, ext: 'v3_client' });

  const mismatchKey = t.ecKey('mismatch.key');

  // Chain: root ca -> intermediate -> leaf; the cert file holds leaf then intermediate.
  const interKey = t.ecKey('intermediate.key');
  const interCert = t.issue({ key: interKey, certName: 'intermediate.crt', cn: 'koatty_serve Test Intermediate', issuer: ca, ext: 'v3_intermediate' });
  const leafKey = t.ecKey('leaf.key');
  const leafCert = t.issue({ key: leafKey, certName: 'leaf.crt', cn: 'localhost', issuer: { key: interKey, cert: interCert }, ext: 'v3_server' });
  const chainCert = t.p('leaf-chain.crt');
  fs.writeFileSync(chainCert, fs.readFileSync(leafCert, 'utf8') + fs.readFileSync(interCert, 'utf8'));

  let rsa = null;
  function rsaServer() {
    if (!rsa) {
      const key = t.p('rsa-server.key');
      openssl(dir, ['genrsa', '-traditional', '-out', key, '2048']);
      const cert = t.issue({ key, certName: 'rsa-server.crt', cn: 'localhost', issuer: ca, ext: 'v3_server' });
      rsa = withPem({ key, cert });
    }
    return rsa;
  }

  const server = withPem({ key: serverKey, cert: serverCert, encKey, sec1Key });
  server.passphrase = PASSPHRASE;
  server.serial = serialOf(serverCert);
  const reload = withPem({ cert2, key3, cert3 });
  reload.serial2 = serialOf(cert2);
  reload.serial3 = serialOf(cert3);

  return {
    dir,
    ca: withPem({ key: ca.key, cert: ca.cert }),
    otherCa: withPem({ key: otherCa.key, cert: otherCa.cert }),
    server,
    reload,
    client: withPem({ key: clientKey, cert: clientCert }),
    otherClient: withPem({ key: otherClientKey, cert: otherClientCert }),
    mismatchKey: withPem({ key: mismatchKey }),
    chain: withPem({ key: leafKey, cert: chainCert, leafCert, interCert }),
    rsaServer,
    serialOf,
    /** A fresh temp dir for files a test rewrites (removed with the rest). */
    scratchDir(name) {
      const d = fs.mkdtempSync(path.join(dir, `${name || 'scratch'}-`));
      return d;
    },
  };
}

/** The test PKI (generated on first call). */
function getCerts() {
  if (!cached) cached = generate();
  return cached;
}

/** True when the `openssl` CLI is runnable. */
function hasOpenssl() {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

module.exports = { getCerts, hasOpenssl, PASSPHRASE };
