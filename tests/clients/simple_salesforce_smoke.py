"""Drives `concord sandbox --tls` with simple-salesforce (unmodified, from PyPI) over HTTPS,
trusting the sandbox's generated certificate authority: describe, CRUD, upsert, query paging,
sObject Collections and composite (through `restful`), getUpdated / getDeleted, limits, Bulk API
2.0 ingest and query, Bulk API 1.0 (sf.bulk) insert, upsert, delete and query. simple-salesforce's login helpers only know *.salesforce.com hosts, so the
session comes from the sandbox's OAuth client_credentials grant, as a user with a token would.
Run by tests/standard_clients.rs with SANDBOX_URL, CA_FILE, CLIENT_ID, CLIENT_SECRET."""

import csv
import datetime
import io
import json
import os

import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest, SalesforceResourceNotFound

url = os.environ["SANDBOX_URL"]
session = requests.Session()
# requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE from the environment override a session's
# `verify`; the sandbox is local, so the environment is not consulted at all.
session.trust_env = False
session.verify = os.environ["CA_FILE"]
tok = session.post(
    f"{url}/services/oauth2/token",
    data={
        "grant_type": "client_credentials",
        "client_id": os.environ["CLIENT_ID"],
        "client_secret": os.environ["CLIENT_SECRET"],
    },
).json()
assert tok["instance_url"] == url, tok
# simple-salesforce's default API version (59.0 in 1.12).
sf = Salesforce(instance_url=tok["instance_url"], session_id=tok["access_token"], session=session)
assert sf.sf_version == "59.0", sf.sf_version
steps = []

d = sf.Account.describe()
assert any(f["name"] == "Erp_Id__c" and f["externalId"] for f in d["fields"])
assert any(o["name"] == "Contact" for o in sf.describe()["sobjects"])
assert any(r["relationshipName"] == "Contacts" and r["childSObject"] == "Contact" for r in d["childRelationships"])
assert any(f["name"] == "BillingAddress" and f["type"] == "address" for f in d["fields"])
case = sf.Case.create({"Subject": "Broken widget", "Origin": "Web"})
got = sf.Case.get(case["id"])
assert got["CaseNumber"].isdigit() and got["Status"] == "New" and got["IsClosed"] is False, got
steps.append("describe")

r = sf.Account.create({"Name": "simple Acme", "Phone": "555-0100"})
assert r["success"] and r["id"].startswith("001"), r
acc_id = r["id"]
assert sf.Account.get(acc_id)["Name"] == "simple Acme"
assert sf.Account.update(acc_id, {"Phone": "555-0199"}) == 204
assert sf.Account.get(acc_id)["Phone"] == "555-0199"
assert sf.Account.delete(acc_id) == 204
try:
    sf.Account.get(acc_id)
    raise AssertionError("a deleted record is not retrievable")
except SalesforceResourceNotFound as e:
    assert e.content[0]["errorCode"] in ("ENTITY_IS_DELETED", "NOT_FOUND"), e.content
steps.append("crud")

assert sf.Account.upsert("Erp_Id__c/PY-1", {"Name": "Upserted"}) == 201
assert sf.Account.upsert("Erp_Id__c/PY-1", {"Name": "Upserted again"}) in (200, 204)
assert sf.Account.get_by_custom_id("Erp_Id__c", "PY-1")["Name"] == "Upserted again"
assert sf.Account.delete("Erp_Id__c/PY-1") == 204
try:
    sf.Account.get_by_custom_id("Erp_Id__c", "PY-1")
    raise AssertionError("a record deleted by external id is gone")
except SalesforceResourceNotFound as e:
    assert e.content[0]["errorCode"] == "NOT_FOUND", e.content
steps.append("upsert")

recs = [{"attributes": {"type": "Account"}, "Name": f"Coll {i:03}"} for i in range(200)]
res = sf.restful("composite/sobjects", method="POST", json={"allOrNone": False, "records": recs})
assert len(res) == 200 and all(x["success"] for x in res)
steps.append("collections")

comp = sf.restful(
    "composite",
    method="POST",
    json={
        "allOrNone": True,
        "compositeRequest": [
            {"method": "POST", "url": "/services/data/v62.0/sobjects/Account", "referenceId": "a", "body": {"Name": "Comp"}},
            {"method": "GET", "url": "/services/data/v62.0/sobjects/Account/@{a.id}?fields=Name", "referenceId": "g"},
        ],
    },
)
assert comp["compositeResponse"][1]["body"]["Name"] == "Comp", comp
steps.append("composite")

# Bulk API 2.0 ingest: 2 500 records, one of them invalid.
rows = [{"Name": f"Bulk {i}", "Erp_Id__c": f"PYB-{i}"} for i in range(2500)] + [{"Name": "", "Erp_Id__c": "PYB-bad"}]
out = sf.bulk2.Account.insert(records=rows, wait=0.1)
assert sum(int(j["numberRecordsProcessed"]) for j in out) == 2501, out
assert sum(int(j["numberRecordsFailed"]) for j in out) == 1, out
failed = sf.bulk2.Account.get_failed_records(out[0]["job_id"])
frow = list(csv.DictReader(io.StringIO(failed)))
assert frow[0]["sf__Error"].startswith("REQUIRED_FIELD_MISSING"), frow
steps.append("bulk ingest")

# Query paging: 2 500 rows come in two pages of 2 000 and 500.
page = sf.query("SELECT Id FROM Account WHERE Name LIKE 'Bulk %'")
assert page["totalSize"] == 2500 and not page["done"] and len(page["records"]) == 2000
assert len(sf.query_all("SELECT Id, Name FROM Account WHERE Name LIKE 'Bulk %'")["records"]) == 2500
sub = sf.query("SELECT Name, (SELECT LastName FROM Contacts) FROM Account WHERE Name LIKE 'Bulk 1%' LIMIT 1")
assert sub["records"][0]["Contacts"] is None, sub
agg = sf.query("SELECT COUNT(Id) n FROM Account WHERE Name LIKE 'Bulk %'")
assert agg["records"][0]["n"] == 2500, agg
found = sf.search("FIND {PYB-7} RETURNING Account(Name, Erp_Id__c)")
assert any(r["Erp_Id__c"] == "PYB-7" for r in found["searchRecords"]), found
assert sf.quick_search("Bulk")["searchRecords"], "quick_search wraps FIND {…}"
steps.append("query")

got = 0
for chunk in sf.bulk2.Account.query("SELECT Id, Name FROM Account WHERE Name LIKE 'Bulk %'", max_records=1000, wait=0.1):
    got += len(list(csv.DictReader(io.StringIO(chunk))))
assert got == 2500, got
steps.append("bulk query")

# Bulk API 1.0 (sf.bulk: JSON jobs, three batches of at most 100, results per record).
rows = [{"Name": f"SV1 {i}", "Erp_Id__c": f"SV1-{i}"} for i in range(250)]
rows.append({"Name": "", "Erp_Id__c": "SV1-bad"})
res = sf.bulk.Account.insert(rows, batch_size=100)
assert len(res) == 251, len(res)
assert sum(1 for r in res if r["success"]) == 250, res[-1]
bad = [r for r in res if not r["success"]]
assert bad[0]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING", bad
assert all(r["created"] and r["id"].startswith("001") for r in res if r["success"])
up = sf.bulk.Account.upsert([{"Erp_Id__c": "SV1-3", "Name": "SV1 three"}, {"Erp_Id__c": "SV1-new", "Name": "SV1 new"}], "Erp_Id__c")
assert [(r["success"], r["created"]) for r in up] == [(True, False), (True, True)], up
gone = sf.bulk.Account.delete([{"Id": res[0]["id"]}])
assert gone[0]["success"], gone
found = sf.bulk.Account.query("SELECT Id, Name, CreatedDate FROM Account WHERE Name LIKE 'SV1 %'")
assert len(found) == 250, len(found)
assert any(r["Name"] == "SV1 three" for r in found)
# Bulk API 1.0 JSON results carry date-times as epoch milliseconds, as an org's do.
assert isinstance(found[0]["CreatedDate"], int), found[0]
steps.append("bulk v1")

now = datetime.datetime.now(datetime.timezone.utc)
upd = sf.Account.updated(now - datetime.timedelta(hours=1), now + datetime.timedelta(minutes=1))
assert len(upd["ids"]) >= 2500, len(upd["ids"])
dele = sf.Account.deleted(now - datetime.timedelta(hours=1), now + datetime.timedelta(minutes=1))
assert any(x["id"] == acc_id for x in dele["deletedRecords"]), dele
steps.append("replication")

assert sf.limits()["DailyApiRequests"]["Max"] > 0
assert sf.limits()["DailyBulkV2QueryJobs"]["Remaining"] < sf.limits()["DailyBulkV2QueryJobs"]["Max"]
steps.append("limits")

# Basic information (GET sobjects/Account/) and the version root.
meta = sf.Account.metadata()
assert meta["objectDescribe"]["name"] == "Account", meta
assert meta["recentItems"] and meta["recentItems"][0]["Id"].startswith("001"), meta["recentItems"][:1]
root = sf.restful("")
assert root["sobjects"] == "/services/data/v59.0/sobjects" and "identity" in root, root
steps.append("resources")

try:
    sf.query("SELECT Nope__c FROM Account")
    raise AssertionError("bad field accepted")
except SalesforceMalformedRequest as e:
    assert e.content[0]["errorCode"] == "INVALID_FIELD", e.content
steps.append("errors")

print(json.dumps({"ok": True, "steps": steps}))
