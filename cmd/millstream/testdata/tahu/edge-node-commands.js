// An Eclipse Tahu Sparkplug B edge node that receives commands, for
// Millstream's command test: it births node acme/press8 (Setpoint Double,
// Count Int32) and device mold1 (Mode String), prints "born", then prints
// every NCMD and DCMD metric it receives as one JSON line and exits after
// the number of commands given (default 2), or after 30 s.
// Usage: node edge-node-commands.js tcp://127.0.0.1:PORT [COMMANDS]
'use strict';
const sparkplug = require('sparkplug-client');

const want = parseInt(process.argv[3] || '2', 10);
let got = 0;
const client = sparkplug.newClient({
  serverUrl: process.argv[2],
  username: '',
  password: '',
  groupId: 'acme',
  edgeNode: 'press8',
  clientId: 'tahu-press8',
  version: 'spBv1.0',
});

function received(kind, device, payload) {
  for (const m of payload.metrics || []) {
    let value = m.value;
    if (value !== null && typeof value === 'object' && typeof value.toNumber === 'function') value = value.toNumber();
    console.log(JSON.stringify({ kind, device, name: m.name, type: m.type, value }));
    got++;
  }
  if (got >= want) {
    client.stop();
    process.exit(0);
  }
}

client.on('error', (err) => { console.error('sparkplug client error', err); process.exit(2); });
client.on('ncmd', (payload) => received('NCMD', '', payload));
client.on('dcmd', (device, payload) => received('DCMD', device, payload));
client.on('birth', () => {
  const now = Date.now();
  client.publishNodeBirth({ timestamp: now, metrics: [
    { name: 'Setpoint', alias: 1, value: 20.0, type: 'Double' },
    { name: 'Count', alias: 2, value: 0, type: 'Int32' },
  ] });
  client.publishDeviceBirth('mold1', { timestamp: now, metrics: [
    { name: 'Mode', alias: 10, value: 'AUTO', type: 'String' },
  ] });
  console.log('born');
});
setTimeout(() => { console.error('timed out waiting for commands'); process.exit(3); }, 30000);
