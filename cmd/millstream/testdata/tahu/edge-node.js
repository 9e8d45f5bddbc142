// An Eclipse Tahu Sparkplug B edge node for Millstream's integration test:
// it births a node and a device (metrics with aliases), publishes data by
// alias, then dies abruptly (SIGKILL) so that the broker publishes its
// NDEATH will. Usage: node edge-node.js tcp://127.0.0.1:PORT [USER PASSWORD]
'use strict';
const sparkplug = require('sparkplug-client');

const client = sparkplug.newClient({
  serverUrl: process.argv[2],
  username: process.argv[3] || '', // anonymous by default: Tahu then sends empty credentials
  password: process.argv[4] || '',
  groupId: 'acme',
  edgeNode: 'press7',
  clientId: 'tahu-press7',
  version: 'spBv1.0',
  publishDeath: true,
});

client.on('error', (err) => { console.error('sparkplug client error', err); process.exit(2); });
client.on('birth', () => {
  const now = Date.now();
  client.publishNodeBirth({ timestamp: now, metrics: [
    { name: 'Motor/Temperature', alias: 1, value: 20.5, type: 'Double' },
    { name: 'Count', alias: 2, value: 7, type: 'Int32' },
    { name: 'Running', alias: 3, value: true, type: 'Boolean' },
    { name: 'Recipe', alias: 4, value: 'PX-20', type: 'String' },
  ] });
  client.publishDeviceBirth('mold1', { timestamp: now, metrics: [
    { name: 'Pressure', alias: 10, value: 3.5, type: 'Float' },
  ] });
  client.publishNodeData({ timestamp: now + 1, metrics: [
    { alias: 1, value: 21.5, type: 'Double' },
    { alias: 2, value: 8, type: 'Int32' },
  ] });
  client.publishDeviceData('mold1', { timestamp: now + 1, metrics: [
    { alias: 10, value: 4.25, type: 'Float' },
  ] });
  // Give the socket time to carry the messages, then die without a
  // DISCONNECT: the broker must publish the NDEATH will.
  setTimeout(() => { console.log('published'); process.kill(process.pid, 'SIGKILL'); }, 500);
});
