//! Change bundles: the file two concord instances exchange when they cannot talk (see
//! `docs/offline.md`). This module is the format only — encoding, compression, encryption and
//! authentication — with no I/O; `engine::bundle` exports and imports them.
//!
//! ```text
//! magic      8   "CONCORDB"
//! format     2   u16 BE (3; formats 1 and 2, whose body is not encrypted, are still read)
//! key id     8   blake3::derive_key("concord bundle key id v1", secret)[..8]
//! nonce     24   random, per bundle (format 3)
//! length     8   u64 BE: bytes of the sealed body
//! body       n   format 3: XChaCha20-Poly1305 (key derive_key("concord bundle encryption v1",
//!                secret), the nonce above, the header before the body as associated data)
//!                of the raw DEFLATE of the body below; formats 1 and 2: the DEFLATE itself
//! mac       32   blake3 keyed with derive_key("concord bundle mac v1", secret), over all the above
//! ```
//!
//! Body (varint = LEB128 u64; str = varint length + UTF-8):
//!
//! ```text
//! str sender · str recipient · varint number
//! varint n · n × (varint first · varint last)           acknowledged bundle numbers
//! varint n · n × (entity[16] · varint len · version entry (store encoding, design.md §9)
//!                 · varint m · m × (str system · str native key)
//!                 · varint j · j × str job
//!                 · field dots (format ≥ 2; `core::dots` encoding))
//! ```
//!
//! Decoding checks, in order: magic, format, key id (a bundle made with another key is
//! *foreign*), length (a short file is *truncated*), the MAC (any changed byte is *corrupted or
//! tampered*), then decrypts (the AEAD tag checks again), then the body. Nothing is decrypted
//! or decoded before the MAC has been verified.

use concord_model::core::dots::FieldDots;
use concord_model::model::varint;
use concord_model::model::{EntityId, InstanceId, Key, SystemId, Version};
use concord_store::{decode_version, encode_version};

/// The first bytes of every bundle.
pub const MAGIC: &[u8; 8] = b"CONCORDB";
/// The bundle format this build writes and reads: encrypted body.
pub const FORMAT: u16 = 3;
/// Older formats still read: 2 (field dots, body not encrypted), 1 (no field dots either).
pub const FORMAT_V2: u16 = 2;
pub const FORMAT_V1: u16 = 1;
/// Magic, format, key id (then, from format 3, the nonce), and the length.
const HEADER_V2: usize = 8 + 2 + 8 + 8;
const NONCE: usize = 24;
const HEADER_V3: usize = HEADER_V2 + NONCE;
const MAC: usize = 32;
/// A decompressed body larger than this is refused (a bomb, or not ours).
const MAX_BODY: usize = 4 << 30;

/// One entity's agreed version as the sender holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct BundleEntity {
    pub entity: EntityId,
    /// The sender's head: content or tombstone, hash and vector clock.
    pub head: Version,
    /// The sender's cross-references: which record stands for the entity in each system.
    pub xrefs: Vec<(SystemId, Key)>,
    /// The sender's jobs the entity belongs to (the receiver's jobs of the same name take it).
    pub jobs: Vec<String>,
    /// The head's field dots (empty from a format 1 bundle).
    pub dots: FieldDots,
}

/// A bundle: every entity whose agreed version the sender does not know the recipient to hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    pub sender: InstanceId,
    /// The instance it was made for (its acknowledgements are for that instance).
    pub recipient: InstanceId,
    /// The sender's count of bundles made for the recipient, from 1.
    pub number: u64,
    /// The recipient's bundles the sender has imported, as inclusive ranges of their numbers:
    /// the recipient then knows the sender holds what they carried.
    pub acks: Vec<(u64, u64)>,
    pub entities: Vec<BundleEntity>,
}

/// Why a bundle was refused. Nothing is changed by a refused bundle.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("not a concord bundle (no CONCORDB header)")]
    NotABundle,
    #[error("bundle format {0} is not supported by this build (it reads formats {FORMAT_V1} to {FORMAT})")]
    Format(u16),
    #[error("foreign bundle: authenticated with another key (key id {found}, ours {ours})")]
    Foreign { found: String, ours: String },
    #[error("truncated bundle: {got} bytes, the header announces {expected}")]
    Truncated { expected: u64, got: u64 },
    #[error("corrupted or tampered bundle: its authentication code does not match")]
    Tampered,
    #[error("malformed bundle body: {0}")]
    Malformed(String),
}

fn derived(context: &str, secret: &[u8]) -> [u8; 32] {
    blake3::derive_key(context, secret)
}

/// The 8-byte id of a bundle key (tells a foreign bundle from a damaged one).
pub fn key_id(secret: &[u8]) -> [u8; 8] {
    let mut id = [0u8; 8];
    id.copy_from_slice(&derived("concord bundle key id v1", secret)[..8]);
    id
}

fn mac(secret: &[u8], data: &[u8]) -> [u8; 32] {
    *blake3::keyed_hash(&derived("concord bundle mac v1", secret), data).as_bytes()
}

/// The MAC of a peer-protocol message other than a bundle (hash-tree requests and answers),
/// with its own derived key, so a message can never pass for a bundle or the reverse.
pub fn message_mac(secret: &[u8], data: &[u8]) -> [u8; 32] {
    *blake3::keyed_hash(&derived("concord peer message mac v1", secret), data).as_bytes()
}

/// Checks a message MAC (hex) in constant time.
pub fn message_mac_ok(secret: &[u8], data: &[u8], hex_mac: &str) -> bool {
    match blake3::Hash::from_hex(hex_mac) {
        Ok(h) => h == blake3::Hash::from(message_mac(secret, data)),
        Err(_) => false,
    }
}

/// A fresh random nonce (16 bytes, hex) for a peer-protocol message: a captured message cannot
/// be replayed (the server keeps the nonces it saw within the message lifetime).
pub fn message_nonce() -> String {
    use chacha20poly1305::aead::rand_core::RngCore;
    let mut b = [0u8; 16];
    chacha20poly1305::aead::OsRng.fill_bytes(&mut b);
    hex(&b)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    varint::put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Encodes, compresses and authenticates a bundle with `secret`.
pub fn encode(b: &Bundle, secret: &[u8]) -> Vec<u8> {
    seal_body(&encode_body(b), secret)
}

/// The body of a bundle, before compression and authentication.
pub fn encode_body(b: &Bundle) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, b.sender.as_str());
    put_str(&mut body, b.recipient.as_str());
    varint::put_u64(&mut body, b.number);
    varint::put_u64(&mut body, b.acks.len() as u64);
    for (first, last) in &b.acks {
        varint::put_u64(&mut body, *first);
        varint::put_u64(&mut body, *last);
    }
    varint::put_u64(&mut body, b.entities.len() as u64);
    let mut v = Vec::new();
    for e in &b.entities {
        body.extend_from_slice(&e.entity.0);
        v.clear();
        encode_version(&e.head, &mut v);
        varint::put_u64(&mut body, v.len() as u64);
        body.extend_from_slice(&v);
        varint::put_u64(&mut body, e.xrefs.len() as u64);
        for (s, k) in &e.xrefs {
            put_str(&mut body, s.as_str());
            put_str(&mut body, k.as_str());
        }
        varint::put_u64(&mut body, e.jobs.len() as u64);
        for j in &e.jobs {
            put_str(&mut body, j);
        }
        e.dots.encode_into(&mut body);
    }
    body
}

/// Compresses and authenticates a raw body (what [`encode`] does after encoding; public for
/// the fuzzer, which reaches the body decoder through it).
pub fn seal_body(body: &[u8], secret: &[u8]) -> Vec<u8> {
    seal(body, secret, FORMAT)
}

fn cipher(secret: &[u8]) -> chacha20poly1305::XChaCha20Poly1305 {
    use chacha20poly1305::KeyInit;
    chacha20poly1305::XChaCha20Poly1305::new(
        &derived("concord bundle encryption v1", secret).into(),
    )
}

fn seal(body: &[u8], secret: &[u8], format: u16) -> Vec<u8> {
    use chacha20poly1305::aead::{Aead, AeadCore, OsRng, Payload};
    let packed = miniz_oxide::deflate::compress_to_vec(body, 6);
    let mut out = Vec::with_capacity(HEADER_V3 + packed.len() + 16 + MAC);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&format.to_be_bytes());
    out.extend_from_slice(&key_id(secret));
    let sealed = if format >= FORMAT {
        let nonce = chacha20poly1305::XChaCha20Poly1305::generate_nonce(&mut OsRng);
        out.extend_from_slice(&nonce);
        let n = packed.len() as u64 + 16;
        out.extend_from_slice(&n.to_be_bytes());
        cipher(secret)
            .encrypt(
                &nonce,
                Payload {
                    msg: &packed,
                    aad: &out,
                },
            )
            .expect("encrypting in memory cannot fail")
    } else {
        out.extend_from_slice(&(packed.len() as u64).to_be_bytes());
        packed
    };
    out.extend_from_slice(&sealed);
    let m = mac(secret, &out);
    out.extend_from_slice(&m);
    out
}

/// A format 2 bundle (body not encrypted), as older builds wrote: for tests of reading it.
#[doc(hidden)]
pub fn encode_v2(b: &Bundle, secret: &[u8]) -> Vec<u8> {
    seal(&encode_body(b), secret, FORMAT_V2)
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, what: &str) -> BundleError {
        BundleError::Malformed(format!("{what} at body offset {}", self.pos))
    }
    fn u64(&mut self, what: &str) -> Result<u64, BundleError> {
        varint::get_u64(self.b, &mut self.pos).map_err(|_| self.err(what))
    }
    fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8], BundleError> {
        let end = self.pos.checked_add(n).ok_or_else(|| self.err(what))?;
        let s = self.b.get(self.pos..end).ok_or_else(|| self.err(what))?;
        self.pos = end;
        Ok(s)
    }
    fn len(&mut self, what: &str) -> Result<usize, BundleError> {
        let n = self.u64(what)?;
        // A length can never exceed what is left: refuses huge counts before allocating.
        if n > (self.b.len() - self.pos) as u64 {
            return Err(self.err(what));
        }
        Ok(n as usize)
    }
    fn str(&mut self, what: &str) -> Result<&'a str, BundleError> {
        let n = self.len(what)?;
        let raw = self.bytes(n, what)?;
        std::str::from_utf8(raw).map_err(|_| self.err(what))
    }
}

/// Verifies and decodes a bundle made with `secret`.
pub fn decode(bytes: &[u8], secret: &[u8]) -> Result<Bundle, BundleError> {
    if bytes.len() < 8 || &bytes[..8] != MAGIC {
        return Err(BundleError::NotABundle);
    }
    if bytes.len() < 10 {
        return Err(BundleError::Truncated {
            expected: HEADER_V2 as u64,
            got: bytes.len() as u64,
        });
    }
    let format = u16::from_be_bytes([bytes[8], bytes[9]]);
    if !(FORMAT_V1..=FORMAT).contains(&format) {
        return Err(BundleError::Format(format));
    }
    let header = if format >= FORMAT {
        HEADER_V3
    } else {
        HEADER_V2
    };
    if bytes.len() < header {
        return Err(BundleError::Truncated {
            expected: header as u64,
            got: bytes.len() as u64,
        });
    }
    let ours = key_id(secret);
    if bytes[10..18] != ours {
        return Err(BundleError::Foreign {
            found: hex(&bytes[10..18]),
            ours: hex(&ours),
        });
    }
    let n = u64::from_be_bytes(bytes[header - 8..header].try_into().expect("8 bytes"));
    let expected = (header as u64)
        .checked_add(n)
        .and_then(|x| x.checked_add(MAC as u64))
        .ok_or(BundleError::Tampered)?;
    if (bytes.len() as u64) < expected {
        return Err(BundleError::Truncated {
            expected,
            got: bytes.len() as u64,
        });
    }
    if bytes.len() as u64 > expected {
        return Err(BundleError::Tampered);
    }
    let end = header + n as usize;
    let want = mac(secret, &bytes[..end]);
    // Constant-time comparison through blake3's Hash equality.
    if blake3::Hash::from(want)
        != blake3::Hash::from(<[u8; 32]>::try_from(&bytes[end..]).expect("32 bytes"))
    {
        return Err(BundleError::Tampered);
    }
    let opened;
    let packed = if format >= FORMAT {
        use chacha20poly1305::aead::{Aead, Payload};
        let nonce =
            chacha20poly1305::XNonce::from_slice(&bytes[HEADER_V2 - 8..HEADER_V2 - 8 + NONCE]);
        opened = cipher(secret)
            .decrypt(
                nonce,
                Payload {
                    msg: &bytes[header..end],
                    aad: &bytes[..header],
                },
            )
            .map_err(|_| BundleError::Tampered)?;
        &opened[..]
    } else {
        &bytes[header..end]
    };
    let body = miniz_oxide::inflate::decompress_to_vec_with_limit(packed, MAX_BODY)
        .map_err(|e| BundleError::Malformed(format!("cannot decompress: {e:?}")))?;
    decode_body(&body, format)
}

fn decode_body(body: &[u8], format: u16) -> Result<Bundle, BundleError> {
    let mut r = Reader { b: body, pos: 0 };
    let sender = r.str("sender")?;
    let sender = InstanceId::new(sender).map_err(|e| r.err(&format!("sender: {e}")))?;
    let recipient = r.str("recipient")?;
    let recipient = InstanceId::new(recipient).map_err(|e| r.err(&format!("recipient: {e}")))?;
    let number = r.u64("number")?;
    let n = r.len("acknowledgement count")?;
    let mut acks = Vec::with_capacity(n);
    for _ in 0..n {
        let first = r.u64("acknowledged range")?;
        let last = r.u64("acknowledged range")?;
        if last < first {
            return Err(r.err("acknowledged range runs backwards"));
        }
        acks.push((first, last));
    }
    let n = r.len("entity count")?;
    let mut entities = Vec::with_capacity(n.min(1 << 20));
    for _ in 0..n {
        let raw = r.bytes(16, "entity id")?;
        let entity = EntityId(raw.try_into().expect("16 bytes"));
        let len = r.len("version length")?;
        let v = r.bytes(len, "version")?;
        let head = decode_version(&entity.0, v)
            .map_err(|e| r.err(&format!("version of {}: {e}", entity.to_hex())))?;
        let m = r.len("cross-reference count")?;
        let mut xrefs = Vec::with_capacity(m);
        for _ in 0..m {
            let s = r.str("system")?;
            let s = SystemId::new(s).map_err(|e| r.err(&format!("system: {e}")))?;
            let k = r.str("native key")?;
            xrefs.push((s, Key::new(k)));
        }
        let j = r.len("job count")?;
        let mut jobs = Vec::with_capacity(j);
        for _ in 0..j {
            jobs.push(r.str("job")?.to_string());
        }
        let dots = if format == FORMAT_V1 {
            FieldDots::default()
        } else {
            FieldDots::decode(r.b, &mut r.pos).map_err(|e| r.err(&e.to_string()))?
        };
        entities.push(BundleEntity {
            entity,
            head,
            xrefs,
            jobs,
            dots,
        });
    }
    if r.pos != body.len() {
        return Err(r.err("trailing bytes"));
    }
    Ok(Bundle {
        sender,
        recipient,
        number,
        acks,
        entities,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests;
