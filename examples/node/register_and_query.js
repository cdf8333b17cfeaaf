#!/usr/bin/env node
// Signaalpoort from Node.js: @grpc/grpc-js over mutual TLS, message types loaded from proto/ at run
// time by @grpc/proto-loader (no code generation step).
//
//   cd examples/node && npm ci --ignore-scripts
//   node register_and_query.js --endpoint 127.0.0.1:7443 --pki ../../certs/dev
//
// Two agencies register a signal on the same (random, elfproef-valid) person; WIJ asks who else is
// involved and is refused (no consent, PERMISSION_DENIED with ErrorInfo reason CONSENT_MISSING);
// WIJ records the family's consent; WIJ asks again and now learns that GGD is involved and how to
// reach them. Exits non-zero when the gateway answers anything else.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const { values: args } = parseArgs({
  options: {
    endpoint: { type: 'string', default: '127.0.0.1:7443' },
    pki: { type: 'string', default: 'certs/dev' },
    proto: { type: 'string', default: path.join(__dirname, '..', '..', 'proto') },
  },
});

const definition = protoLoader.loadSync(
  ['signaalpoort/v1/signals.proto', 'signaalpoort/v1/consent.proto'],
  {
    includeDirs: [args.proto],
    keepCase: true, // field names as in the .proto files (signal_id, not signalId)
    enums: String, // enum values by name (CATEGORY_PARENTING)
    longs: String,
    defaults: true,
    oneofs: true,
  },
);
const v1 = grpc.loadPackageDefinition(definition).signaalpoort.v1;

// google.rpc.Status and ErrorInfo (github.com/googleapis/googleapis, google/rpc/{status,error_details}.proto),
// only the fields needed to read the reason of a denial from the grpc-status-details-bin trailer.
const rpcTypes = protobuf.parse(`
  syntax = "proto3";
  package google.rpc;
  message Any { string type_url = 1; bytes value = 2; }
  message Status { int32 code = 1; string message = 2; repeated Any details = 3; }
  message ErrorInfo { string reason = 1; string domain = 2; map<string, string> metadata = 3; }
`, { keepCase: true }).root;
const Status = rpcTypes.lookupType('google.rpc.Status');
const ErrorInfo = rpcTypes.lookupType('google.rpc.ErrorInfo');

/** The ErrorInfo reason of a failed call, or undefined. */
function errorReason(err) {
  const [bin] = (err.metadata && err.metadata.get('grpc-status-details-bin')) || [];
  if (!bin) return undefined;
  const status = Status.decode(bin);
  const info = status.details.find((d) => d.type_url.endsWith('/google.rpc.ErrorInfo'));
  return info ? ErrorInfo.decode(info.value).reason : undefined;
}

/** A random 9-digit BSN that passes the elfproef, so every run concerns a new person. */
function randomBsn() {
  for (;;) {
    const digits = Array.from(crypto.randomBytes(8), (b) => b % 10);
    digits[0] = 1 + (digits[0] % 9);
    const sum = digits.reduce((acc, d, i) => acc + d * (9 - i), 0);
    const check = sum % 11; // sum - check ≡ 0 (mod 11), the last digit weighs -1
    if (check < 10) return digits.join('') + String(check);
  }
}

/** Clients of one agency: its certificate from the dev PKI is its identity. */
function agency(slug, actorId) {
  const pki = args.pki;
  const credentials = grpc.credentials.createSsl(
    fs.readFileSync(path.join(pki, 'ca.pem')),
    fs.readFileSync(path.join(pki, 'agencies', `${slug}.key`)),
    fs.readFileSync(path.join(pki, 'agencies', `${slug}.pem`)),
  );
  // The dev server certificate is issued to "localhost" (and 127.0.0.1).
  const options = { 'grpc.ssl_target_name_override': 'localhost' };
  const signals = new v1.SignalService(args.endpoint, credentials, options);
  const consents = new v1.ConsentService(args.endpoint, credentials, options);
  const call = (client, method) => (request) =>
    new Promise((resolve, reject) => {
      const metadata = new grpc.Metadata();
      metadata.set('x-actor-id', actorId); // the professional on whose behalf the call is made
      client[method](request, metadata, { deadline: Date.now() + 10_000 }, (err, response) =>
        err ? reject(err) : resolve(response),
      );
    });
  return {
    registerSignal: call(signals, 'RegisterSignal'),
    queryInvolvement: call(signals, 'QueryInvolvement'),
    recordConsent: call(consents, 'RecordConsent'),
    close: () => {
      signals.close();
      consents.close();
    },
  };
}

function fail(message) {
  console.error(`node example: FAILED: ${message}`);
  process.exitCode = 1;
}

async function main() {
  const wij = agency('wij-groningen', 'node-example-wij-1');
  const ggd = agency('ggd-groningen', 'node-example-ggd-1');
  try {
    const bsn = randomBsn();
    const mine = await wij.registerSignal({
      bsn,
      category: 'CATEGORY_PARENTING',
      contact: { team: 'Wijkteam Vinkhuizen', phone: '050 367 0000' },
    });
    console.log(`WIJ registered signal ${mine.signal.signal_id} (refreshed=${mine.refreshed})`);
    const theirs = await ggd.registerSignal({
      bsn,
      category: 'CATEGORY_HEALTH',
      contact: { team: 'JGZ Vinkhuizen', phone: '050 367 4000' },
    });
    // The answer is GGD's own signal only: registering tells nobody whether others are involved.
    console.log(`GGD registered signal ${theirs.signal.signal_id} (refreshed=${theirs.refreshed})`);

    const query = { signal_id: mine.signal.signal_id, purpose: 'PURPOSE_CARE_COORDINATION' };
    try {
      await wij.queryInvolvement(query);
      return fail('QueryInvolvement answered without consent');
    } catch (err) {
      const reason = errorReason(err);
      console.log(`without consent: ${grpc.status[err.code]} (reason ${reason}): ${err.details}`);
      if (err.code !== grpc.status.PERMISSION_DENIED || reason !== 'CONSENT_MISSING') {
        return fail('expected PERMISSION_DENIED with reason CONSENT_MISSING');
      }
    }

    const inAYear = Math.floor(Date.now() / 1000) + 365 * 86400;
    // The person's age comes from the municipality's household declaration. None was declared here,
    // so the strictest rule applies: the person and a parent or guardian consent together.
    const { consent } = await wij.recordConsent({
      bsn,
      givers: ['CONSENT_GIVER_SUBJECT', 'CONSENT_GIVER_PARENT_OR_GUARDIAN'],
      purposes: ['PURPOSE_CARE_COORDINATION'],
      roles: ['ROLE_WIJ', 'ROLE_GGD'],
      valid_until: { seconds: String(inAYear), nanos: 0 },
      evidence_ref: `node-example/${crypto.randomUUID()}`,
    });
    console.log(`WIJ recorded consent ${consent.consent_id} for WIJ and GGD, care coordination`);

    const answer = await wij.queryInvolvement(query);
    console.log(`with consent: basis ${answer.basis}, ${answer.involvements.length} involvement(s)`);
    for (const i of answer.involvements) {
      console.log(`  ${i.agency.name} (${i.agency.role}): ${i.contact.team}, ${i.contact.phone} — ${i.category}, on ${i.basis}`);
    }
    const seen = answer.involvements.some((i) => i.agency.name === 'GGD Groningen');
    if (answer.basis !== 'BASIS_CONSENT' || !seen) {
      return fail('expected GGD Groningen on the basis of the consent');
    }
    console.log('node example: OK');
  } finally {
    wij.close();
    ggd.close();
  }
}

main().catch((err) => {
  fail(`${err.code !== undefined ? grpc.status[err.code] : ''} ${err.details || err.stack}`);
});
