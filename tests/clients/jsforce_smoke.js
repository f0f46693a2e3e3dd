// Drives `concord sandbox` with jsforce (unmodified, from npm) over plain HTTP: OAuth2 password
// login, describe, CRUD, upsert, query paging (query + queryMore and autoFetch), sObject
// Collections, composite, getUpdated / getDeleted, limits, Bulk API 2.0 ingest and query, Bulk
// API 1.0 (conn.bulk) load and query, Streaming API (Change Data Capture over CometD).
// Run by tests/standard_clients.rs with SANDBOX_URL, CLIENT_ID, CLIENT_SECRET, USERNAME, PASSWORD.
'use strict';
const assert = require('assert');
const jsforce = require('jsforce');

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};

async function main() {
  const url = env('SANDBOX_URL');
  const conn = new jsforce.Connection({
    // jsforce's default API version (50.0 in jsforce 3): an org serves 31.0 to the current one.
    oauth2: { loginUrl: url, clientId: env('CLIENT_ID'), clientSecret: env('CLIENT_SECRET') },
  });
  assert.strictEqual(conn.version, '50.0', 'jsforce 3 defaults to API 50.0');
  const done = [];
  const step = (name) => { done.push(name); };

  // OAuth2 username-password flow.
  const info = await conn.login(env('USERNAME'), env('PASSWORD'));
  assert.ok(conn.accessToken, 'access token');
  assert.strictEqual(conn.instanceUrl, url);
  assert.ok(info.id && info.organizationId, 'user info from the identity URL');
  step('login');

  // Describe.
  const global = await conn.describeGlobal();
  assert.ok(global.sobjects.some((o) => o.name === 'Account'));
  const d = await conn.sobject('Account').describe();
  assert.ok(d.fields.some((f) => f.name === 'Erp_Id__c' && f.externalId));
  step('describe');

  // CRUD.
  const acc = conn.sobject('Account');
  const created = await acc.create({ Name: 'jsforce Acme', Phone: '555-0100' });
  assert.ok(created.success && created.id.startsWith('001'), JSON.stringify(created));
  const got = await acc.retrieve(created.id);
  assert.strictEqual(got.Name, 'jsforce Acme');
  const upd = await acc.update({ Id: created.id, Phone: '555-0199' });
  assert.ok(upd.success);
  assert.strictEqual((await acc.retrieve(created.id)).Phone, '555-0199');
  const del = await acc.destroy(created.id);
  assert.ok(del.success);
  await assert.rejects(acc.retrieve(created.id), (e) => e.errorCode === 'ENTITY_IS_DELETED' || e.errorCode === 'NOT_FOUND');
  step('crud');

  // Upsert by external id: created, then updated.
  const u1 = await acc.upsert({ Name: 'Upserted', Erp_Id__c: 'JS-1' }, 'Erp_Id__c');
  assert.ok(u1.success && u1.created === true, JSON.stringify(u1));
  const u2 = await acc.upsert({ Name: 'Upserted again', Erp_Id__c: 'JS-1' }, 'Erp_Id__c');
  assert.ok(u2.success, JSON.stringify(u2));
  step('upsert');

  // sObject Collections: arrays of up to 200 records go through composite/sobjects.
  const many = [];
  for (let i = 0; i < 450; i++) many.push({ Name: `Coll ${String(i).padStart(3, '0')}` });
  const res = await acc.create(many, { allOrNone: false, allowRecursive: true });
  assert.strictEqual(res.length, 450);
  assert.ok(res.every((r) => r.success), JSON.stringify(res.find((r) => !r.success)));
  const mixed = await acc.create([{ Name: 'ok' }, { Phone: 'no name' }], { allOrNone: false });
  assert.strictEqual(mixed[0].success, true);
  assert.strictEqual(mixed[1].success, false);
  assert.strictEqual(mixed[1].errors[0].statusCode, 'REQUIRED_FIELD_MISSING');
  // An array update goes through composite/sobjects with the lowercase `id` jsforce sends.
  const updMany = await acc.update(res.slice(0, 3).map((r) => ({ Id: r.id, Phone: '555-0300' })));
  assert.strictEqual(updMany.length, 3);
  assert.ok(updMany.every((r) => r.success), JSON.stringify(updMany));
  const back = await acc.retrieve(res[0].id);
  assert.strictEqual(back.Phone, '555-0300');
  // An array retrieve goes through composite/sobjects/Account (POST, ids and fields; every
  // field from describe when none are given); an unknown id comes back null, in its place.
  const ids = res.slice(0, 3).map((r) => r.id);
  const got3 = await acc.retrieve([ids[0], '001000000000000AAA', ids[2]]);
  assert.strictEqual(got3.length, 3);
  assert.strictEqual(got3[0].Id, ids[0]);
  assert.strictEqual(got3[0].Phone, '555-0300');
  assert.strictEqual(got3[1], null);
  assert.strictEqual(got3[2].Name, 'Coll 002');
  assert.ok('AnnualRevenue' in got3[2], 'every field when none are given');
  const narrow = await acc.retrieve(ids, { fields: ['Name'] });
  assert.deepStrictEqual(Object.keys(narrow[1]).sort(), ['Name', 'attributes']);
  step('collections');

  // Query paging: one page, then queryMore, then autoFetch of everything.
  const first = await conn.query("SELECT Id, Name FROM Account WHERE Name LIKE 'Coll %' ORDER BY Name", { headers: { 'Sforce-Query-Options': 'batchSize=200' } });
  assert.strictEqual(first.totalSize, 450);
  assert.strictEqual(first.done, false);
  assert.strictEqual(first.records.length, 200);
  const second = await conn.queryMore(first.nextRecordsUrl);
  assert.strictEqual(second.records.length, 200);
  const all = [];
  await new Promise((resolve, reject) => {
    conn.query("SELECT Id, Name FROM Account WHERE Name LIKE 'Coll %'")
      .on('record', (r) => all.push(r))
      .on('end', resolve)
      .on('error', reject)
      .run({ autoFetch: true, maxFetch: 10000 });
  });
  assert.strictEqual(all.length, 450);
  const cnt = await conn.query('SELECT COUNT() FROM Account');
  assert.ok(cnt.totalSize >= 452);
  const nested = await conn.query("SELECT Name, (SELECT Id FROM Contacts) FROM Account WHERE Name = 'Coll 001'");
  assert.strictEqual(nested.records[0].Contacts, null);
  const grouped = await conn.query("SELECT COUNT(Id) n FROM Account WHERE Name LIKE 'Coll %'");
  assert.strictEqual(grouped.records[0].n, 450);
  const found = await conn.search("FIND {Coll 00*} RETURNING Account(Id, Name ORDER BY Name LIMIT 3)");
  assert.strictEqual(found.searchRecords.length, 3, JSON.stringify(found));
  assert.strictEqual(found.searchRecords[0].Name, 'Coll 000');
  step('query');

  // Composite with references.
  const comp = await conn.requestPost(`/services/data/v62.0/composite`, {
    allOrNone: true,
    compositeRequest: [
      { method: 'POST', url: '/services/data/v62.0/sobjects/Account', referenceId: 'acct', body: { Name: 'Composite parent' } },
      { method: 'POST', url: '/services/data/v62.0/sobjects/Contact', referenceId: 'ct', body: { LastName: 'Child', AccountId: '@{acct.id}' } },
      { method: 'GET', url: '/services/data/v62.0/sobjects/Contact/@{ct.id}?fields=AccountId', referenceId: 'check' },
    ],
  });
  assert.strictEqual(comp.compositeResponse.length, 3);
  assert.strictEqual(comp.compositeResponse[0].httpStatusCode, 201);
  assert.strictEqual(comp.compositeResponse[2].body.AccountId, comp.compositeResponse[0].body.id);
  step('composite');

  // getUpdated / getDeleted.
  const start = new Date(Date.now() - 3600 * 1000);
  const end = new Date(Date.now() + 60 * 1000);
  const updated = await acc.updated(start, end);
  assert.ok(updated.ids.length >= 450, `updated ids: ${updated.ids.length}`);
  const deleted = await acc.deleted(start, end);
  assert.ok(deleted.deletedRecords.some((r) => r.id === created.id), JSON.stringify(deleted));
  step('replication');

  // Limits.
  const limits = await conn.limits();
  assert.ok(limits.DailyApiRequests.Max > 0);
  assert.ok(limits.DailyBulkV2QueryJobs.Max > 0 && limits.DataStorageMB.Max > 0);
  step('limits');

  // Identity (the id URL from the login, jsforce passing the token as oauth_token), recently
  // modified records through the object's basic information and /recent.
  const me = await conn.identity();
  assert.strictEqual(me.user_id, info.id);
  assert.strictEqual(me.organization_id, info.organizationId);
  assert.ok(me.username, JSON.stringify(me));
  const recentAcc = await acc.recent();
  assert.ok(recentAcc.length > 0 && recentAcc[0].Id.startsWith('001'), JSON.stringify(recentAcc[0]));
  const recentAll = await conn.recent(5);
  assert.strictEqual(recentAll.length, 5);
  step('identity');

  // Bulk API 2.0 ingest and query.
  conn.bulk2.pollInterval = 100;
  conn.bulk2.pollTimeout = 30000;
  const rows = [];
  for (let i = 0; i < 1200; i++) rows.push({ Name: `Bulk ${i}`, Erp_Id__c: `B-${i}` });
  rows.push({ Name: '', Erp_Id__c: 'B-bad' }); // no Name: fails
  const load = await conn.bulk2.loadAndWaitForResults({ object: 'Account', operation: 'insert', input: rows });
  assert.strictEqual(load.successfulResults.length, 1200);
  assert.strictEqual(load.failedResults.length, 1);
  assert.ok(load.successfulResults[0].sf__Id.startsWith('001'));
  assert.ok(load.failedResults[0].sf__Error.startsWith('REQUIRED_FIELD_MISSING'), load.failedResults[0].sf__Error);
  const up = await conn.bulk2.loadAndWaitForResults({
    object: 'Account', operation: 'upsert', externalIdFieldName: 'Erp_Id__c',
    input: [{ Erp_Id__c: 'B-1', Name: 'Bulk one' }, { Erp_Id__c: 'B-new', Name: 'Bulk new' }],
  });
  assert.strictEqual(up.successfulResults.length, 2);
  const bq = await conn.bulk2.query("SELECT Id, Name, Erp_Id__c FROM Account WHERE Name LIKE 'Bulk %'");
  const bulkRows = [];
  await new Promise((resolve, reject) => {
    bq.on('record', (r) => bulkRows.push(r)).on('end', resolve).on('error', reject);
  });
  assert.strictEqual(bulkRows.length, 1201);
  assert.ok(bulkRows.some((r) => r.Name === 'Bulk one' && r.Erp_Id__c === 'B-1'));
  step('bulk');

  // Bulk API 1.0 (conn.bulk: XML jobs, CSV batches, result CSVs), jsforce's default polling.
  const v1rows = [];
  for (let i = 0; i < 300; i++) v1rows.push({ Name: `V1 ${i}`, Erp_Id__c: `V1-${i}` });
  v1rows.push({ Name: '', Erp_Id__c: 'V1-bad' }); // no Name: fails alone
  const v1 = await conn.bulk.load('Account', 'insert', v1rows);
  assert.strictEqual(v1.length, 301);
  assert.strictEqual(v1.filter((r) => r.success).length, 300);
  assert.ok(v1[0].id.startsWith('001') && v1[0].created === true, JSON.stringify(v1[0]));
  assert.ok(!v1[300].success && v1[300].errors[0].startsWith('REQUIRED_FIELD_MISSING'), JSON.stringify(v1[300]));
  const v1up = await conn.bulk.load('Account', 'upsert', { extIdField: 'Erp_Id__c' },
    [{ Erp_Id__c: 'V1-1', Name: 'V1 one' }, { Erp_Id__c: 'V1-new', Name: 'V1 new' }]);
  assert.deepStrictEqual(v1up.map((r) => [r.success, r.created]), [[true, false], [true, true]]);
  const v1del = await conn.bulk.load('Account', 'delete', [{ Id: v1[0].id }]);
  assert.ok(v1del[0].success, JSON.stringify(v1del[0]));
  const v1q = await conn.bulk.query("SELECT Id, Name, Erp_Id__c FROM Account WHERE Name LIKE 'V1 %'");
  const v1Rows = [];
  await new Promise((resolve, reject) => {
    v1q.on('record', (r) => v1Rows.push(r)).on('end', resolve).on('error', reject);
  });
  assert.strictEqual(v1Rows.length, 300); // 300 inserted, 1 new, 1 deleted
  assert.ok(v1Rows.some((r) => r.Name === 'V1 one' && r.Erp_Id__c === 'V1-1'));
  assert.ok(!v1Rows.some((r) => r.Id === v1[0].id));
  // A job on an object the org does not have fails with Bulk API 1.0's error.
  await assert.rejects(async () => { await conn.bulk.load('Nope__c', 'insert', [{ Name: 'x' }]); }, (e) => e.errorCode === 'InvalidJob' && /Unable to find object: Nope__c/.test(e.message));
  step('bulk1');

  // Streaming API: Change Data Capture through jsforce's streaming client (Faye, long-polling,
  // unmodified), then the same events again from a new client replaying every retained one.
  const events = [];
  const sub = conn.streaming.topic('/data/AccountChangeEvent').subscribe((m) => events.push(m));
  await sub; // subscribed
  const streamed = await conn.sobject('Account').create({ Name: 'Streamed' });
  await conn.sobject('Account').update({ Id: streamed.id, Phone: '555-0100' });
  await conn.sobject('Account').destroy(streamed.id);
  const mine = (list) => list.filter((e) => e.payload.ChangeEventHeader.recordIds.includes(streamed.id));
  const waitFor = async (list, n) => {
    const deadline = Date.now() + 15000;
    while (mine(list).length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    return mine(list);
  };
  const cdc = await waitFor(events, 3);
  assert.deepStrictEqual(cdc.map((e) => e.payload.ChangeEventHeader.changeType), ['CREATE', 'UPDATE', 'DELETE'], JSON.stringify(cdc));
  assert.strictEqual(cdc[0].payload.Name, 'Streamed');
  assert.strictEqual(cdc[0].payload.ChangeEventHeader.entityName, 'Account');
  assert.ok(cdc[1].payload.ChangeEventHeader.changedFields.includes('Phone'), JSON.stringify(cdc[1]));
  assert.strictEqual(cdc[1].payload.Phone, '555-0100');
  assert.ok(cdc[0].event.replayId < cdc[1].event.replayId && cdc[1].event.replayId < cdc[2].event.replayId);
  sub.cancel();
  const { StreamingExtension } = require('jsforce/lib/api/streaming');
  const replay = new StreamingExtension.Replay('/data/AccountChangeEvent', -2);
  const client = conn.streaming.createClient([replay]);
  const again = [];
  const sub2 = client.subscribe('/data/AccountChangeEvent', (m) => again.push(m));
  await sub2;
  const replayed = await waitFor(again, 3);
  assert.deepStrictEqual(replayed.map((e) => e.event.replayId), cdc.map((e) => e.event.replayId));
  sub2.cancel();
  client.disconnect();
  step('streaming');

  // A PushTopic as jsforce's documentation uses one: created as a record, subscribed by name
  // (jsforce maps it to /topic/{Name}); only the records its WHERE clause selects notify.
  await conn.sobject('PushTopic').create({
    Name: 'JsforceOslo',
    Query: "SELECT Id, Name FROM Account WHERE BillingCity = 'Oslo'",
    ApiVersion: 59.0,
    NotifyForFields: 'Referenced',
  });
  const notes = [];
  const tsub = conn.streaming.topic('JsforceOslo').subscribe((m) => notes.push(m));
  await tsub;
  const oslo = await conn.sobject('Account').create({ Name: 'Topic Oslo', BillingCity: 'Oslo' });
  await conn.sobject('Account').create({ Name: 'Topic Bergen', BillingCity: 'Bergen' });
  await conn.sobject('Account').update({ Id: oslo.id, Name: 'Topic Oslo 2' });
  const until = Date.now() + 15000;
  while (notes.length < 2 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 200)); // nothing more should come
  assert.deepStrictEqual(notes.map((m) => [m.event.type, m.sobject.Name]),
    [['created', 'Topic Oslo'], ['updated', 'Topic Oslo 2']], JSON.stringify(notes));
  assert.strictEqual(notes[0].sobject.Id, oslo.id);
  assert.ok(notes[0].event.replayId < notes[1].event.replayId);
  tsub.cancel();
  step('pushtopic');

  // Errors in Salesforce's shape reach jsforce's error objects.
  await assert.rejects(conn.query('SELECT Nope__c FROM Account'), (e) => e.errorCode === 'INVALID_FIELD');
  await assert.rejects(conn.query('SELEC Id FROM Account'), (e) => e.errorCode === 'MALFORMED_QUERY');
  // An unknown resource and a method it does not take come back as Salesforce errors.
  await assert.rejects(conn.request('/services/data/v50.0/nothing/here'), (e) => e.errorCode === 'NOT_FOUND');
  await assert.rejects(
    conn.request({ method: 'PUT', url: '/services/data/v50.0/sobjects/Account/describe', body: '{}' }),
    (e) => e.errorCode === 'METHOD_NOT_ALLOWED');
  step('errors');

  // Logout revokes the session (POST /services/oauth2/revoke); the old token is refused.
  const oldToken = conn.accessToken;
  await conn.logout();
  const after = new jsforce.Connection({ instanceUrl: url, accessToken: oldToken });
  await assert.rejects(after.query('SELECT Id FROM Account LIMIT 1'), (e) => e.errorCode === 'INVALID_SESSION_ID' || /expired|invalid/i.test(String(e.message)));
  step('logout');

  console.log(JSON.stringify({ ok: true, steps: done }));
  // The streaming client's long poll would keep the process for its timeout.
  process.exit(0);
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
