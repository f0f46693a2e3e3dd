//! Offline reconciliation between engine instances through change bundles: two sites that
//! never talk converge by exchanging files; concurrent edits merge field by field; bundles
//! imported twice, out of order, late or lost change nothing wrong; a tampered bundle is
//! refused and changes nothing; random multi-instance exchanges converge (property test).

use concord::bundle::{self, Bundle};
use concord::connector::memory::MemorySystem;
use concord::connector::Connector;
use concord::core::{DeleteRule, FieldPolicy, Policy};
use concord::engine::bundle::{export, import, Scope};
use concord::engine::{Engine, JobOptions, SyncJob};
use concord::model::{Fields, InstanceId, Key, NormalizeOptions, SystemId};
use concord::store::{MemoryStore, StateStore, Store};
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::sync::Arc;

const KEY: &[u8] = b"shared by every site";

fn policy() -> Policy {
    Policy::new(FieldPolicy::Newest, DeleteRule::DeleteWins)
}

/// One engine instance with its own store and its own systems, running job "accounts".
struct Site {
    engine: Engine,
    store: Arc<MemoryStore>,
    systems: Vec<Arc<MemorySystem>>,
    policy: Policy,
}

impl Site {
    fn new(name: &str, systems: &[&str]) -> Site {
        let store = Arc::new(MemoryStore::new());
        let engine =
            Engine::new(StateStore::open(store.clone(), InstanceId::new(name).unwrap()).unwrap());
        Site {
            engine,
            store,
            systems: systems
                .iter()
                .map(|s| Arc::new(MemorySystem::new(SystemId::new(*s).unwrap())))
                .collect(),
            policy: policy(),
        }
    }

    fn with_policy(mut self, p: Policy) -> Site {
        self.policy = p;
        self
    }

    fn job(&self) -> SyncJob {
        SyncJob {
            name: "accounts".into(),
            systems: self
                .systems
                .iter()
                .map(|s| s.clone() as Arc<dyn Connector>)
                .collect(),
            policy: self.policy.clone(),
            normalize: NormalizeOptions::default(),
            batch_size: 50,
            options: JobOptions::default(),
        }
    }

    fn scopes(&self) -> Vec<Scope> {
        vec![Scope {
            job: "accounts".into(),
            systems: self.systems.iter().map(|s| s.system().clone()).collect(),
            policy: self.policy.clone(),
        }]
    }

    async fn sync(&self) -> u64 {
        let r = self.engine.sync(&self.job(), None).await.unwrap();
        assert!(r.errors.is_empty(), "{r:?}");
        r.total_written()
    }

    fn bundle_for(&self, peer: &Site) -> Vec<u8> {
        let b = export(
            self.engine.state(),
            peer.engine.state().instance(),
            &self.scopes(),
        )
        .unwrap();
        bundle::encode(&b, KEY)
    }

    fn import(&self, bytes: &[u8]) -> concord::engine::bundle::ImportReport {
        let b: Bundle = bundle::decode(bytes, KEY).unwrap();
        import(self.engine.state(), &b, &self.scopes(), 1_000).unwrap()
    }

    fn dump(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut all = Vec::new();
        self.store
            .scan(&[], None, &mut |k, v| {
                all.push((k.to_vec(), v.to_vec()));
                true
            })
            .unwrap();
        all
    }
}

/// A system's records without their keys, sorted: what "holds the same records" compares.
fn content(s: &MemorySystem) -> Vec<String> {
    let mut v: Vec<String> = s
        .rows()
        .values()
        .map(|r| {
            let mut f: Vec<String> = r
                .fields
                .iter()
                .map(|(k, v)| format!("{k}={}", v.plain_text()))
                .collect();
            f.sort();
            f.join(",")
        })
        .collect();
    v.sort();
    v
}

fn key_of(s: &MemorySystem, name: &str) -> Key {
    s.rows()
        .into_iter()
        .find(|(_, r)| r.fields.get("name").map(|v| v.plain_text()) == Some(name.into()))
        .map(|(k, _)| k)
        .unwrap_or_else(|| panic!("no record {name} in {}", s.system()))
}

fn set(s: &MemorySystem, name: &str, field: &str, value: &str) {
    let k = key_of(s, name);
    let f = s.rows()[&k].fields.clone().with(field, value);
    assert!(s.user_update(&k, f));
}

/// Review finding: a bundle merge took every field of a version for its version's origin, so a
/// field set by another system (a merged head's) competed under the wrong name: with `phone`
/// preferring the ERP, an ERP phone edit merged at site A lost at B to a later CRM edit.
#[tokio::test]
async fn a_fields_origin_travels_with_bundles() {
    let p = || policy().with_field("phone", FieldPolicy::Prefer(SystemId::new("erp").unwrap()));
    let a = Site::new("site-a", &["erp", "sf"]).with_policy(p());
    let b = Site::new("site-b", &["erp", "sf"]).with_policy(p());
    a.systems[0].user_create(
        Fields::new()
            .with("name", "Customer 1")
            .with("city", "Oslo")
            .with("phone", "1"),
    );
    a.sync().await;
    b.import(&a.bundle_for(&b));
    b.sync().await;
    // At A, in one pass, the ERP changes the phone and Salesforce the city: the merged head
    // is Salesforce's, its phone the ERP's.
    set(&a.systems[0], "Customer 1", "phone", "A erp");
    set(&a.systems[1], "Customer 1", "city", "Bergen");
    a.sync().await;
    // At B, later (the newest edit), Salesforce changes the phone.
    for i in 0..10 {
        set(&b.systems[1], "Customer 1", "phone", &format!("B sf {i}"));
    }
    b.sync().await;
    let (ab, ba) = (a.bundle_for(&b), b.bundle_for(&a));
    let (ra, rb) = (a.import(&ba), b.import(&ab));
    assert_eq!((ra.merged, rb.merged), (1, 1), "{ra:?} {rb:?}");
    a.sync().await;
    b.sync().await;
    for s in a.systems.iter().chain(&b.systems) {
        assert_eq!(
            content(s),
            ["city=Bergen,name=Customer 1,phone=A erp"],
            "{}: the ERP's phone wins under prefer:erp",
            s.system()
        );
    }
}

#[tokio::test]
async fn two_offline_sites_converge_through_bundles() {
    let a = Site::new("site-a", &["erp_a", "crm_a"]);
    let b = Site::new("site-b", &["erp_b", "crm_b"]);
    for i in 0..5 {
        a.systems[0].user_create(
            Fields::new()
                .with("name", format!("Customer {i}"))
                .with("city", "Oslo")
                .with("phone", "1"),
        );
    }
    a.sync().await;
    assert_eq!(content(&a.systems[1]), content(&a.systems[0]));

    // Site B learns everything from A's first bundle; its next run writes it to its systems.
    let a1 = a.bundle_for(&b);
    let r = b.import(&a1);
    assert_eq!(
        (r.entities, r.fast_forwarded, r.queued_writes),
        (5, 5, 10),
        "{r:?}"
    );
    assert_eq!(b.sync().await, 10);
    assert_eq!(content(&b.systems[0]), content(&a.systems[0]));
    assert_eq!(content(&b.systems[1]), content(&a.systems[0]));

    // Offline for a while: both sides edit the same record (different fields), A deletes one,
    // B creates one.
    set(&a.systems[1], "Customer 1", "phone", "+47 edited at A");
    a.systems[0].user_delete(&key_of(&a.systems[0], "Customer 2"));
    a.sync().await;
    set(&b.systems[0], "Customer 1", "city", "Bergen (edited at B)");
    b.systems[1].user_create(
        Fields::new()
            .with("name", "Customer B-new")
            .with("city", "Tromsø")
            .with("phone", "9"),
    );
    b.sync().await;

    // Bundles cross: each side imports the other's, then runs.
    let a2 = a.bundle_for(&b);
    let b1 = b.bundle_for(&a);
    let ra = a.import(&b1);
    let rb = b.import(&a2);
    assert_eq!(
        ra.merged, 1,
        "the record edited on both sides merges at A: {ra:?}"
    );
    assert_eq!(rb.merged, 1, "and at B: {rb:?}");
    a.sync().await;
    b.sync().await;
    // A second exchange carries the merged versions both ways (each side merged the same
    // pair; the results are equal, so they fast-forward or are already held).
    let a3 = a.bundle_for(&b);
    let b2 = b.bundle_for(&a);
    a.import(&b2);
    b.import(&a3);
    a.sync().await;
    b.sync().await;

    let want = content(&a.systems[0]);
    for s in a.systems.iter().chain(&b.systems) {
        assert_eq!(content(s), want, "{}", s.system());
    }
    assert!(want.iter().any(|r| r.contains("city=Bergen (edited at B)")
        && r.contains("phone=+47 edited at A")
        && r.contains("name=Customer 1")));
    assert!(
        !want.iter().any(|r| r.contains("name=Customer 2,")),
        "{want:?}"
    );
    assert!(want.iter().any(|r| r.contains("name=Customer B-new")));
    assert_eq!(want.len(), 5);

    // Settled: once each side has acknowledged the other's bundles, nothing more moves.
    for _ in 0..2 {
        let x = a.bundle_for(&b);
        let y = b.bundle_for(&a);
        b.import(&x);
        a.import(&y);
    }
    let x = bundle::decode(&a.bundle_for(&b), KEY).unwrap();
    let y = bundle::decode(&b.bundle_for(&a), KEY).unwrap();
    assert_eq!((x.entities.len(), y.entities.len()), (0, 0));
    assert_eq!(a.sync().await + b.sync().await, 0);

    // Old bundles imported again, late and out of order: nothing changes anywhere.
    let before = (a.dump(), b.dump());
    for old in [&a1, &a3, &a2] {
        let r = b.import(old);
        assert!(
            r.repeated && r.fast_forwarded == 0 && r.merged == 0,
            "{r:?}"
        );
    }
    for old in [&b2, &b1] {
        a.import(old);
    }
    assert_eq!(a.sync().await + b.sync().await, 0);
    // Entity entries (heads, snapshots, native keys: format 3's entity tree).
    let entity = concord::store::Tree::Entity.prefix();
    let heads = |s: &Site| {
        s.dump()
            .into_iter()
            .filter(|(k, _)| k[0] == entity)
            .collect::<Vec<_>>()
    };
    assert!(!heads(&a).is_empty() && !heads(&b).is_empty());
    assert_eq!(
        heads(&a),
        before
            .0
            .into_iter()
            .filter(|(k, _)| k[0] == entity)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        heads(&b),
        before
            .1
            .into_iter()
            .filter(|(k, _)| k[0] == entity)
            .collect::<Vec<_>>()
    );
}

/// Entities exchanged before field dots existed (no dots recorded at either site): the merge
/// still keeps both one-sided edits — a changed value and a removed field — because the dots
/// are derived from the newest version both exchanged.
#[tokio::test]
async fn one_sided_edits_survive_without_recorded_dots() {
    let a = Site::new("site-a", &["erp_a"]);
    let b = Site::new("site-b", &["erp_b"]);
    a.systems[0].user_create(
        Fields::new()
            .with("name", "Customer 1")
            .with("phone", "1")
            .with("fax", "9"),
    );
    a.sync().await;
    let x = a.bundle_for(&b);
    b.import(&x);
    b.sync().await;
    // As a store from before field dots: nothing recorded.
    for site in [&a, &b] {
        let mut batch = concord::store::Batch::new();
        for (k, _) in site.dump().into_iter().filter(|(k, _)| k[0] == b'f') {
            batch.delete(k);
        }
        assert!(!batch.is_empty());
        site.store.apply(batch).unwrap();
    }
    set(&a.systems[0], "Customer 1", "phone", "2");
    a.sync().await;
    let k = key_of(&b.systems[0], "Customer 1");
    let mut f = b.systems[0].rows()[&k].fields.clone();
    f.remove("fax");
    assert!(b.systems[0].user_update(&k, f));
    b.sync().await;
    let x = a.bundle_for(&b);
    let y = b.bundle_for(&a);
    b.import(&x);
    a.import(&y);
    a.sync().await;
    b.sync().await;
    for s in [&a, &b] {
        let row = &s.systems[0].rows()[&key_of(&s.systems[0], "Customer 1")];
        assert_eq!(
            row.fields.get("phone").map(|v| v.plain_text()).as_deref(),
            Some("2"),
            "{}",
            s.systems[0].system()
        );
        assert_eq!(row.fields.get("fax"), None, "{}", s.systems[0].system());
    }
}

#[tokio::test]
async fn a_tampered_or_foreign_bundle_changes_nothing() {
    let a = Site::new("site-a", &["erp_a"]);
    let b = Site::new("site-b", &["erp_b"]);
    a.systems[0].user_create(Fields::new().with("name", "x"));
    a.sync().await;
    let good = a.bundle_for(&b);
    let before = b.dump();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    assert_eq!(
        bundle::decode(&bad, KEY).unwrap_err(),
        bundle::BundleError::Tampered
    );
    assert!(matches!(
        bundle::decode(&good, b"another key").unwrap_err(),
        bundle::BundleError::Foreign { .. }
    ));
    assert!(bundle::decode(&good[..good.len() - 1], KEY).is_err());
    assert_eq!(b.dump(), before, "a refused bundle never reaches the store");
    // A bundle of this instance's own is refused by import.
    let own = bundle::decode(&good, KEY).unwrap();
    assert!(import(a.engine.state(), &own, &a.scopes(), 0).is_err());
}

/// Random edits at N sites, bundles delivered in random order with duplicates and losses;
/// then every pair exchanges until quiet: every system holds the same records, and (when
/// every field edited at one site only holds that site's last value.
fn converge_case(
    sites: usize,
    systems: usize,
    ops: Vec<(usize, u8, u8, u8)>,
    deliveries: Vec<(usize, usize, bool)>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let names: Vec<String> = (0..sites).map(|i| format!("site{i}")).collect();
        let all: Vec<Site> = names
            .iter()
            .map(|n| {
                let own = [format!("{n}_erp"), format!("{n}_crm"), format!("{n}_shop")];
                let own: Vec<&str> = own.iter().take(systems).map(String::as_str).collect();
                Site::new(n, &own)
            })
            .collect();
        // Five shared records, created at site 0 and spread by a first round of bundles.
        for i in 0..5 {
            all[0].systems[0].user_create(Fields::new().with("name", format!("r{i}")));
        }
        all[0].sync().await;
        for j in 1..sites {
            let x = all[0].bundle_for(&all[j]);
            all[j].import(&x);
            all[j].sync().await;
        }
        // Each op: a site sets field f<site> of record r in one of its systems (one-sided
        // edits never conflict).
        let mut expected: BTreeSet<(String, String, String)> = BTreeSet::new();
        let mut in_flight: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut d = deliveries.into_iter();
        for (site, rec, val, sys) in ops {
            let s = &all[site % sites];
            let target = &s.systems[sys as usize % systems];
            let field = format!("f{}", site % sites);
            let name = format!("r{}", rec % 5);
            let value = format!("v{val}");
            set(target, &name, &field, &value);
            expected.retain(|(n, f, _)| !(n == &name && f == &field));
            expected.insert((name, field, value));
            s.sync().await;
            // Some bundle traffic: made now, delivered now, later, twice, or never.
            if let Some((from, to, lose)) = d.next() {
                let (from, to) = (from % sites, to % sites);
                if from != to {
                    let x = all[from].bundle_for(&all[to]);
                    if !lose {
                        in_flight.push((to, x.clone()));
                    }
                    if in_flight.len() > 2 {
                        let (t, y) = in_flight.remove(in_flight.len() / 2);
                        all[t].import(&y);
                        all[t].import(&y);
                        all[t].sync().await;
                    }
                }
            }
        }
        for (t, y) in in_flight {
            all[t].import(&y);
            all[t].sync().await;
        }
        // Everyone exchanges with everyone until nothing moves.
        for _ in 0..4 {
            for i in 0..sites {
                for j in 0..sites {
                    if i != j {
                        let x = all[i].bundle_for(&all[j]);
                        all[j].import(&x);
                        all[j].sync().await;
                    }
                }
            }
        }
        let want = content(&all[0].systems[0]);
        for sys in all.iter().flat_map(|s| &s.systems) {
            assert_eq!(content(sys), want, "{}", sys.system());
        }
        for (name, field, value) in &expected {
            let k = key_of(&all[0].systems[0], name);
            let got = all[0].systems[0].rows()[&k]
                .fields
                .get(field)
                .map(|v| v.plain_text());
            assert_eq!(got.as_deref(), Some(value.as_str()), "{name}.{field}");
        }
    });
}

/// A real bundle from site A (three customers) for site B, made once.
fn sample_bundle() -> &'static [u8] {
    static B: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    B.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let a = Site::new("site-a", &["erp_a"]);
            let b = Site::new("site-b", &["erp_b"]);
            for i in 0..3 {
                a.systems[0].user_create(Fields::new().with("name", format!("Customer {i}")));
            }
            a.sync().await;
            a.bundle_for(&b)
        })
    })
}

/// Cases per property (CONCORD_BUNDLE_CASES, default 64).
fn cases() -> u32 {
    std::env::var("CONCORD_BUNDLE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]
    /// A bundle changed in any way — bits flipped anywhere, cut short, bytes appended — is
    /// refused before anything is imported, and the store stays as it was.
    #[test]
    fn a_tampered_bundle_never_changes_the_store(
        flips in proptest::collection::btree_map(any::<usize>(), 1u8..=255, 0..4),
        cut in proptest::option::of(any::<usize>()),
        extra in proptest::collection::vec(any::<u8>(), 0..3),
    ) {
        let good = sample_bundle();
        let mut bad = good.to_vec();
        for (at, x) in &flips {
            let i = at % bad.len();
            bad[i] ^= x;
        }
        if let Some(c) = cut {
            bad.truncate(c % bad.len());
        }
        bad.extend_from_slice(&extra);
        prop_assume!(bad != good);
        let b = Site::new("site-b", &["erp_b"]);
        let before = b.dump();
        prop_assert!(bundle::decode(&bad, KEY).is_err());
        prop_assert_eq!(b.dump(), before);
    }

    /// Two instances, one to three systems each: no one-sided edit is ever lost, whatever the
    /// delivery order.
    #[test]
    fn two_sites_converge_and_lose_no_edit(
        systems in 1usize..4,
        ops in proptest::collection::vec((0usize..2, any::<u8>(), any::<u8>(), any::<u8>()), 1..30),
        deliveries in proptest::collection::vec((0usize..2, 0usize..2, any::<bool>()), 0..30),
    ) {
        converge_case(2, systems, ops, deliveries);
    }

    /// Three or four instances of one or two systems each, relaying merged versions: all
    /// converge to one state and no one-sided edit is lost (field dots: no common ancestor
    /// needed).
    #[test]
    fn many_sites_converge_and_lose_no_edit(
        sites in 3usize..5,
        systems in 1usize..3,
        ops in proptest::collection::vec((0usize..4, any::<u8>(), any::<u8>(), any::<u8>()), 1..25),
        deliveries in proptest::collection::vec((0usize..4, 0usize..4, any::<bool>()), 0..25),
    ) {
        converge_case(sites, systems, ops, deliveries);
    }
}

/// The exchange protocol as functions (no HTTP): a plain exchange, then hash-tree exchanges that
/// move exactly what differs, and the refusals — a replayed or altered tree message, a message
/// under another key.
#[tokio::test]
async fn the_exchange_protocol_runs_without_a_network() {
    use concord::exchange::{Client, ExchangeError, Server};
    let a = Site::new("site-a", &["erp_a", "crm_a"]);
    let b = Site::new("site-b", &["erp_b", "crm_b"]);
    for i in 0..5 {
        a.systems[0].user_create(Fields::new().with("name", format!("Customer {i}")));
    }
    a.sync().await;
    let server = Server::new(a.engine.state().clone(), a.scopes(), KEY.to_vec());
    let scopes = b.scopes();
    let client = Client {
        state: b.engine.state(),
        scopes: &scopes,
        key: KEY,
        peer: InstanceId::new("site-a").unwrap(),
    };
    // A plain exchange: B learns A's five entities.
    let req = client.exchange_request().unwrap();
    assert_eq!(req.sent, 0);
    let (at_a, answer) = server.exchange(&req.body).unwrap();
    assert_eq!(at_a.entities, 0);
    let r = client.import_answer(&answer).unwrap();
    assert_eq!(r.entities, 5, "{r:?}");
    assert_eq!(b.sync().await, 10);
    // A tree exchange of equal instances moves nothing.
    let step = client.tree_request().unwrap();
    let replay = step.request.clone();
    let signed = server.tree(&step.request.body, &step.request.mac).unwrap();
    let ex = client
        .tree_exchange(step, &signed.body, &signed.mac)
        .unwrap();
    assert_eq!(
        (ex.summary.differing_entities, ex.sent),
        (0, 0),
        "{:?}",
        ex.summary
    );
    // The same request again is a replay; an altered one fails its MAC.
    let e = server.tree(&replay.body, &replay.mac).unwrap_err();
    assert!(
        matches!(&e, ExchangeError::Unauthorized(m) if m.contains("replayed")),
        "{e}"
    );
    let mut altered = client.tree_request().unwrap().request;
    altered.body[10] ^= 1;
    let e = server.tree(&altered.body, &altered.mac).unwrap_err();
    assert!(
        matches!(&e, ExchangeError::Unauthorized(m) if m.contains("MAC")),
        "{e}"
    );
    // Under another key, nothing is accepted.
    let other = Client {
        state: b.engine.state(),
        scopes: &scopes,
        key: b"another secret",
        peer: InstanceId::new("site-a").unwrap(),
    };
    let s = other.tree_request().unwrap();
    assert!(matches!(
        server.tree(&s.request.body, &s.request.mac),
        Err(ExchangeError::Unauthorized(_))
    ));
    // One record edited at A: the tree finds exactly it, and it crosses.
    set(&a.systems[0], "Customer 3", "city", "Bergen");
    a.sync().await;
    let step = client.tree_request().unwrap();
    let signed = server.tree(&step.request.body, &step.request.mac).unwrap();
    let ex = client
        .tree_exchange(step, &signed.body, &signed.mac)
        .unwrap();
    assert_eq!(ex.summary.differing_entities, 1, "{:?}", ex.summary);
    assert_eq!(ex.summary.asked_for, 1);
    let (_, answer) = server
        .tree_exchange(&ex.request.body, &ex.request.mac)
        .unwrap();
    let r = client.import_answer(&answer).unwrap();
    assert_eq!(r.entities, 1, "{r:?}");
    b.sync().await;
    assert_eq!(content(&b.systems[0]), content(&a.systems[0]));
    // The tree-exchange message cannot be sent twice either.
    assert!(matches!(
        server.tree_exchange(&ex.request.body, &ex.request.mac),
        Err(ExchangeError::Unauthorized(_))
    ));
}
