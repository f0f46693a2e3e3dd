// Updates Salesforce records through jsforce (unmodified) on command, for benches/latency.rs:
// each stdin line `ID FIELD VALUE` is one `sobject('Account').update`, answered on stdout with
// `done` once the update call has returned. SANDBOX_URL and TOKEN from the environment.
'use strict';
const jsforce = require('jsforce');
const readline = require('readline');

const conn = new jsforce.Connection({ instanceUrl: process.env.SANDBOX_URL, accessToken: process.env.TOKEN });
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', async (line) => {
  const [id, field, ...rest] = line.split(' ');
  try {
    await conn.sobject('Account').update({ Id: id, [field]: rest.join(' ') });
    process.stdout.write('done\n');
  } catch (e) {
    process.stdout.write(`error ${e.message}\n`);
  }
});
rl.on('close', () => process.exit(0));
