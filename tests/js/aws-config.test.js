'use strict';
// With DynamoDB configured and no AWS credentials anywhere, the chat server and the profile
// service use the documented region and dummy keys and contact nothing but the configured
// endpoint: no probe of the instance-metadata service (pointed here at a local listener
// that counts connections, through the SDK's AWS_EC2_METADATA_SERVICE_ENDPOINT).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const { REDIS_URL, startServer, signup, api } = require('./helpers/server');
const { PROFILE_BIN } = require('./helpers/topology');

const DYNAMODB_URL = process.env.WEBCHAT_TEST_DYNAMODB_URL || '';
const skip = !REDIS_URL || !DYNAMODB_URL ? 'WEBCHAT_TEST_REDIS_URL and WEBCHAT_TEST_DYNAMODB_URL are needed' : false;

describe('DynamoDB without AWS credentials', { skip }, () => {
  const metadataConnections = [];
  let metadata;
  let home;
  let chat;
  let profile;

  before(async () => {
    // No credentials, region or profile files: what a fresh machine has.
    for (const k of Object.keys(process.env)) if (k.startsWith('AWS_')) delete process.env[k];
    home = fs.mkdtempSync(path.join(os.tmpdir(), 'webchat-no-aws-'));
    metadata = net.createServer((socket) => {
      metadataConnections.push(socket.remoteAddress);
      socket.destroy();
    });
    await new Promise((resolve) => metadata.listen(0, '127.0.0.1', resolve));
    const env = {
      HOME: home,
      AWS_EC2_METADATA_SERVICE_ENDPOINT: `http://127.0.0.1:${metadata.address().port}`,
      WEBCHAT_DYNAMODB_ENDPOINT: DYNAMODB_URL,
      WEBCHAT_TABLE_PREFIX: `noaws_${crypto.randomBytes(4).toString('hex')}_`,
      WEBCHAT_TOKEN_SECRET: crypto.randomBytes(32).toString('hex'),
    };
    profile = await startServer({ bin: PROFILE_BIN, name: 'webchat-profile', redisUrl: REDIS_URL, env });
    chat = await startServer({ redisUrl: REDIS_URL, env: { ...env, WEBCHAT_PROFILE_URL: profile.url } });
  });
  after(async () => {
    if (chat) await chat.stop();
    if (profile) await profile.stop();
    if (metadata) await new Promise((resolve) => metadata.close(resolve));
    fs.rmSync(home, { recursive: true, force: true });
  });

  it('works against the endpoint and never asks the metadata service', async () => {
    const health = await api(chat.url, 'GET', '/health');
    assert.equal(health.status, 200);
    assert.deepEqual(health.json.backends.dynamodb, { kind: 'dynamodb', ok: true });

    // Signup writes the account to DynamoDB and the profile through the profile service.
    const user = await signup(chat.url, 'noaws', { name: 'No AWS' });
    const res = await api(chat.url, 'POST', '/api/v1/login', { uid: user.uid, password: user.password });
    assert.equal(res.status, 200);
    const prof = await api(profile.url, 'GET', `/api/v1/profiles/${user.uid}`);
    assert.equal(prof.status, 200);
    assert.equal(prof.json.name, 'No AWS');

    assert.deepEqual(metadataConnections, []);
    assert.doesNotMatch(chat.stderr() + profile.stderr(), /metadata|IMDS|169\.254/i);
  });
});
