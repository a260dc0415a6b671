//! The authoritative answer path: a [`CompiledZone`] holds every answer already encoded, so
//! that answering a query is a parse of its question, one hash lookup and a few copies.
//!
//! Answers are encoded once per zone change with the owner name compressed to a pointer at the
//! question (offset 12), which every response repeats with the client's own letter case; SRV
//! targets are never compressed (RFC 2782). Negative answers follow RFC 2308: NXDOMAIN for a
//! name that does not exist, NOERROR with no answer for a name that exists (or is an empty
//! non-terminal) without the asked type, both with the SOA in the authority section. Before the
//! first zone is loaded every query inside the domain gets SERVFAIL, never a wrong NXDOMAIN.
//! Over UDP an answer larger than 512 bytes (or the client's EDNS size) keeps the records that
//! fit and sets TC, so the client retries over TCP.

use std::net::IpAddr;

use super::fasthash::FastMap;

use super::zone::{RData, RType, Records};

pub const TYPE_SOA: u16 = 6;
pub const TYPE_NS: u16 = 2;
const TYPE_OPT: u16 = 41;
const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;
const CLASS_ANY: u16 = 255;

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_NOTIMP: u8 = 4;
pub const RCODE_REFUSED: u8 = 5;

/// Encoded answers for one (name, type), as ranges of the zone's arenas (one allocation for
/// the whole zone rather than three per name).
#[derive(Clone, Copy, Debug, Default)]
struct Answer {
    /// The answer section's records, owner compressed to the question: `arena[start..end]`.
    start: u32,
    end: u32,
    /// End offset (relative to `start`) of each record, for truncation at record boundaries:
    /// `ends[ends_start..ends_end]`.
    ends_start: u32,
    ends_end: u32,
    /// Additional records (addresses of SRV targets): `arena[add_start..add_end]`.
    add_start: u32,
    add_end: u32,
    additional_count: u16,
}

#[derive(Clone, Debug, Default)]
struct NameEntry {
    /// By type code.
    answers: Vec<(u16, Answer)>,
    /// The union of several sets, for ANY.
    any: Option<Answer>,
}

impl NameEntry {
    fn find(&self, qtype: u16) -> Option<&Answer> {
        if qtype == TYPE_ANY {
            return self.any.as_ref().or(self.answers.first().map(|(_, a)| a));
        }
        self.answers
            .iter()
            .find(|(t, _)| *t == qtype)
            .map(|(_, a)| a)
    }
}

/// Zone settings that are not records.
#[derive(Clone, Debug)]
pub struct ZoneParams {
    /// The apex, fully qualified (`mesos.`).
    pub apex: String,
    pub ttl: u32,
    pub negative_ttl: u32,
    pub serial: u32,
}

/// A zone ready to answer from.
#[derive(Debug)]
pub struct CompiledZone {
    names: FastMap<Box<[u8]>, NameEntry>,
    /// Every answer's bytes.
    arena: Vec<u8>,
    /// Every answer's record ends.
    ends: Vec<u32>,
    /// The SOA record for authority sections: apex owner (uncompressed), negative TTL.
    soa_rr: Vec<u8>,
    pub serial: u32,
    pub record_count: usize,
}

/// Encodes a dotted name (`web.marathon.mesos.`) in wire form, lower case. Labels longer than
/// 63 bytes are cut; the caller produced them from [`super::names`], so none should be.
pub fn encode_name(name: &str, out: &mut Vec<u8>) {
    for l in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        let bytes = l.as_bytes();
        let len = bytes.len().min(63);
        out.push(len as u8);
        out.extend(bytes[..len].iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
}

fn push_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn push_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends one record: owner (already encoded bytes), type, class IN, ttl, rdata.
fn push_rr(out: &mut Vec<u8>, owner: &[u8], rtype: u16, ttl: u32, rdata: &[u8]) {
    out.extend_from_slice(owner);
    push_u16(out, rtype);
    push_u16(out, CLASS_IN);
    push_u32(out, ttl);
    push_u16(out, rdata.len() as u16);
    out.extend_from_slice(rdata);
}

fn rdata_bytes(d: &RData, out: &mut Vec<u8>) {
    match d {
        RData::A(v4) => out.extend_from_slice(&v4.octets()),
        RData::Aaaa(v6) => out.extend_from_slice(&v6.octets()),
        RData::Srv {
            priority,
            weight,
            port,
            target,
        } => {
            push_u16(out, *priority);
            push_u16(out, *weight);
            push_u16(out, *port);
            encode_name(target, out);
        }
        RData::Txt(text) => {
            for chunk in text.as_bytes().chunks(255) {
                out.push(chunk.len() as u8);
                out.extend_from_slice(chunk);
            }
        }
    }
}

fn soa_rdata(apex: &str, serial: u32, negative_ttl: u32) -> Vec<u8> {
    let mut r = Vec::new();
    encode_name(&format!("ns1.{apex}"), &mut r);
    encode_name(&format!("root.ns1.{apex}"), &mut r);
    push_u32(&mut r, serial);
    push_u32(&mut r, 60); // refresh
    push_u32(&mut r, 600); // retry
    push_u32(&mut r, 86_400); // expire
    push_u32(&mut r, negative_ttl); // minimum: the negative-caching TTL (RFC 2308)
    r
}

const QNAME_POINTER: [u8; 2] = [0xC0, 0x0C];

impl CompiledZone {
    /// Encodes `records` plus the apex SOA and NS.
    pub fn compile(records: &Records, params: &ZoneParams) -> Self {
        let mut apex = Vec::new();
        encode_name(&params.apex, &mut apex);
        let mut rdata = Vec::with_capacity(64);
        let mut wire = Vec::with_capacity(64);
        let mut arena: Vec<u8> = Vec::with_capacity(records.sets.len() * 48);
        let mut ends: Vec<u32> = Vec::with_capacity(records.sets.len() * 2);

        let soa = soa_rdata(&params.apex, params.serial, params.negative_ttl);
        let mut ns = Vec::new();
        encode_name(&format!("ns1.{}", params.apex), &mut ns);

        // Addresses by owner name, for the additional section of SRV answers.
        let mut addresses: FastMap<&str, Vec<&RData>> = FastMap::default();
        for ((name, rtype), data) in &records.sets {
            if matches!(rtype, RType::A | RType::Aaaa) {
                addresses.entry(name.as_str()).or_default().extend(data);
            }
        }
        let mut names: FastMap<Box<[u8]>, NameEntry> =
            FastMap::with_capacity_and_hasher(records.sets.len() * 2, Default::default());

        let mut record_count = 0;
        let mut owner = Vec::with_capacity(64);
        let mut seen_targets: Vec<&str> = Vec::new();
        for ((name, rtype), data) in &records.sets {
            let code = rtype.code();
            wire.clear();
            encode_name(name, &mut wire);
            if !wire.ends_with(&apex) {
                continue; // outside the zone: never served
            }
            let start = arena.len();
            let ends_start = ends.len();
            for d in data {
                rdata.clear();
                rdata_bytes(d, &mut rdata);
                push_rr(&mut arena, &QNAME_POINTER, code, params.ttl, &rdata);
                ends.push((arena.len() - start) as u32);
                record_count += 1;
            }
            let end = arena.len();
            let mut additional_count = 0u16;
            seen_targets.clear();
            for d in data {
                if let RData::Srv { target, .. } = d {
                    if seen_targets.contains(&&**target) {
                        continue;
                    }
                    seen_targets.push(target);
                    owner.clear();
                    encode_name(target, &mut owner);
                    for addr in addresses.get(&**target).into_iter().flatten() {
                        rdata.clear();
                        rdata_bytes(addr, &mut rdata);
                        push_rr(&mut arena, &owner, addr.rtype().code(), params.ttl, &rdata);
                        additional_count += 1;
                    }
                }
            }
            let answer = Answer {
                start: start as u32,
                end: end as u32,
                ends_start: ends_start as u32,
                ends_end: ends.len() as u32,
                add_start: end as u32,
                add_end: arena.len() as u32,
                additional_count,
            };
            match names.get_mut(wire.as_slice()) {
                Some(entry) => entry.answers.push((code, answer)),
                None => {
                    names.insert(
                        wire.clone().into_boxed_slice(),
                        NameEntry {
                            answers: vec![(code, answer)],
                            any: None,
                        },
                    );
                    add_ancestors(&mut names, &wire, apex.len());
                }
            }
        }
        let apex_entry = names.entry(apex.clone().into_boxed_slice()).or_default();
        for (code, ttl, r) in [
            (TYPE_SOA, params.negative_ttl, &soa),
            (TYPE_NS, params.ttl, &ns),
        ] {
            let start = arena.len();
            push_rr(&mut arena, &QNAME_POINTER, code, ttl, r);
            ends.push((arena.len() - start) as u32);
            apex_entry.answers.push((
                code,
                Answer {
                    start: start as u32,
                    end: arena.len() as u32,
                    ends_start: ends.len() as u32 - 1,
                    ends_end: ends.len() as u32,
                    add_start: arena.len() as u32,
                    add_end: arena.len() as u32,
                    additional_count: 0,
                },
            ));
        }
        // ANY: the union of a name's sets (additional records left out); a name with one set
        // answers ANY with it.
        for entry in names.values_mut() {
            if entry.answers.len() > 1 {
                let start = arena.len();
                let ends_start = ends.len();
                for (_, a) in &entry.answers {
                    let base = (arena.len() - start) as u32;
                    arena.extend_from_within(a.start as usize..a.end as usize);
                    for i in a.ends_start..a.ends_end {
                        let e = ends[i as usize];
                        ends.push(e + base);
                    }
                }
                entry.any = Some(Answer {
                    start: start as u32,
                    end: arena.len() as u32,
                    ends_start: ends_start as u32,
                    ends_end: ends.len() as u32,
                    add_start: arena.len() as u32,
                    add_end: arena.len() as u32,
                    additional_count: 0,
                });
            }
        }
        let mut soa_rr = Vec::new();
        push_rr(&mut soa_rr, &apex, TYPE_SOA, params.negative_ttl, &soa);
        Self {
            names,
            arena,
            ends,
            soa_rr,
            serial: params.serial,
            record_count,
        }
    }
}

/// Registers every name between `wire` and the apex as existing (empty non-terminals answer
/// NODATA, not NXDOMAIN).
fn add_ancestors(names: &mut FastMap<Box<[u8]>, NameEntry>, wire: &[u8], apex_len: usize) {
    // Invariant: a name in the map has all its ancestors in the map, so the walk stops at the
    // first one already there.
    let mut at = 0;
    loop {
        let len = wire[at] as usize;
        at += 1 + len;
        if len == 0 || at > wire.len() || wire.len() - at < apex_len {
            break;
        }
        let suffix = &wire[at..];
        if names.contains_key(suffix) {
            break;
        }
        names.insert(suffix.to_vec().into_boxed_slice(), NameEntry::default());
    }
}

/// How the query arrived: it bounds the answer's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What to do with a query.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send `out`.
    Respond,
    /// The name is outside the domain: forward the query as it came.
    Forward,
    /// Not worth an answer (a response, or too short to carry an id).
    Drop,
}

/// The parts of a query the answer needs.
struct Question {
    id: [u8; 2],
    opcode: u8,
    rd: bool,
    /// Lower-cased wire name.
    lower: [u8; 255],
    name_len: usize,
    qtype: u16,
    qclass: u16,
    /// End of the question section in the query.
    end: usize,
    /// The client's EDNS UDP size, if it sent an OPT record.
    edns: Option<u16>,
}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Skips an encoded name (labels or a pointer) starting at `at`; returns the offset after it.
fn skip_name(b: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *b.get(at)? as usize;
        if len == 0 {
            return Some(at + 1);
        }
        if len & 0xC0 == 0xC0 {
            return Some(at + 2);
        }
        if len > 63 {
            return None;
        }
        at += 1 + len;
    }
}

/// Parses a query; `Err(rcode)` when it is malformed.
fn parse(query: &[u8]) -> Result<Question, u8> {
    let mut q = Question {
        id: [query[0], query[1]],
        opcode: (query[2] >> 3) & 0x0F,
        rd: query[2] & 0x01 != 0,
        lower: [0; 255],
        name_len: 0,
        qtype: 0,
        qclass: 0,
        end: 12,
        edns: None,
    };
    if q.opcode != 0 {
        return Err(RCODE_NOTIMP);
    }
    let qdcount = read_u16(query, 4).ok_or(RCODE_FORMERR)?;
    if qdcount != 1 {
        return Err(RCODE_FORMERR);
    }
    let mut at = 12;
    loop {
        let len = *query.get(at).ok_or(RCODE_FORMERR)? as usize;
        if len > 63 || q.name_len + len + 1 > 255 {
            return Err(RCODE_FORMERR);
        }
        let label = query.get(at..at + 1 + len).ok_or(RCODE_FORMERR)?;
        for (i, b) in label.iter().enumerate() {
            q.lower[q.name_len + i] = if i == 0 { *b } else { b.to_ascii_lowercase() };
        }
        q.name_len += 1 + len;
        at += 1 + len;
        if len == 0 {
            break;
        }
    }
    q.qtype = read_u16(query, at).ok_or(RCODE_FORMERR)?;
    q.qclass = read_u16(query, at + 2).ok_or(RCODE_FORMERR)?;
    q.end = at + 4;
    // EDNS: look for an OPT record among the additional records.
    let an = read_u16(query, 6).unwrap_or(0);
    let ns = read_u16(query, 8).unwrap_or(0);
    let ar = read_u16(query, 10).unwrap_or(0);
    if ar > 0 {
        let mut at = q.end;
        let mut ok = true;
        for i in 0..(an as usize + ns as usize + ar as usize) {
            let Some(after_name) = skip_name(query, at) else {
                ok = false;
                break;
            };
            let (Some(rtype), Some(class), Some(rdlen)) = (
                read_u16(query, after_name),
                read_u16(query, after_name + 2),
                read_u16(query, after_name + 8),
            ) else {
                ok = false;
                break;
            };
            if i >= an as usize + ns as usize && rtype == TYPE_OPT {
                q.edns = Some(class);
            }
            at = after_name + 10 + rdlen as usize;
        }
        if !ok {
            q.edns = None;
        }
    }
    Ok(q)
}

const FLAG_QR: u8 = 0x80;
const FLAG_AA: u8 = 0x04;
const FLAG_TC: u8 = 0x02;
const FLAG_RA: u8 = 0x80;

fn header(out: &mut Vec<u8>, q: &Question, aa: bool, ra: bool, rcode: u8) {
    out.extend_from_slice(&q.id);
    out.push(FLAG_QR | (q.opcode << 3) | if aa { FLAG_AA } else { 0 } | u8::from(q.rd));
    out.push(if ra { FLAG_RA } else { 0 } | (rcode & 0x0F));
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // counts, filled in below
}

fn set_count(out: &mut [u8], index: usize, v: u16) {
    out[4 + index * 2..6 + index * 2].copy_from_slice(&v.to_be_bytes());
}

fn push_opt(out: &mut Vec<u8>, payload: u16) {
    out.push(0);
    push_u16(out, TYPE_OPT);
    push_u16(out, payload);
    push_u32(out, 0);
    push_u16(out, 0);
}

const OPT_LEN: usize = 11;

/// Settings of the answer path that do not change with the zone.
#[derive(Clone, Copy, Debug)]
pub struct AnswerOptions {
    /// Queries outside the domain may be forwarded (sets RA, and `Action::Forward`).
    pub forwarding: bool,
    /// Our EDNS UDP payload size.
    pub max_udp_payload: u16,
}

/// Answers `query` into `out`. `zone` is `None` before the first zone is loaded. `apex` is the
/// encoded apex, known even then.
pub fn answer(
    zone: Option<&CompiledZone>,
    apex: &[u8],
    query: &[u8],
    transport: Transport,
    opts: AnswerOptions,
    out: &mut Vec<u8>,
) -> Action {
    out.clear();
    if query.len() < 12 || query[2] & FLAG_QR != 0 {
        return Action::Drop;
    }
    let q = match parse(query) {
        Ok(q) => q,
        Err(rcode) => {
            let id = [query[0], query[1]];
            out.extend_from_slice(&id);
            out.push(FLAG_QR | (query[2] & 0x78) | (query[2] & 0x01));
            out.push(rcode);
            out.extend_from_slice(&[0; 8]);
            return Action::Respond;
        }
    };
    let name = &q.lower[..q.name_len];
    let in_zone = name.len() >= apex.len()
        && name.ends_with(apex)
        && label_boundary(name, name.len() - apex.len());
    let limit = match (transport, q.edns) {
        (Transport::Tcp, _) => 65_535,
        (Transport::Udp, None) => 512,
        (Transport::Udp, Some(size)) => size.clamp(512, opts.max_udp_payload.max(512)) as usize,
    };
    let opt_len = if q.edns.is_some() { OPT_LEN } else { 0 };
    if !in_zone {
        if opts.forwarding {
            return Action::Forward;
        }
        header(out, &q, false, false, RCODE_REFUSED);
        finish_simple(out, query, &q, opts);
        return Action::Respond;
    }
    let Some(zone) = zone else {
        header(out, &q, false, opts.forwarding, RCODE_SERVFAIL);
        finish_simple(out, query, &q, opts);
        return Action::Respond;
    };
    if q.qclass != CLASS_IN && q.qclass != CLASS_ANY {
        header(out, &q, false, opts.forwarding, RCODE_REFUSED);
        finish_simple(out, query, &q, opts);
        return Action::Respond;
    }
    let entry = zone.names.get(name);
    let found = entry.and_then(|e| e.find(q.qtype));
    match found {
        Some(a) => {
            header(out, &q, true, opts.forwarding, RCODE_NOERROR);
            out.extend_from_slice(&query[12..q.end]);
            let room = limit.saturating_sub(out.len() + opt_len);
            let bytes = &zone.arena[a.start as usize..a.end as usize];
            let ends = &zone.ends[a.ends_start as usize..a.ends_end as usize];
            let additional = &zone.arena[a.add_start as usize..a.add_end as usize];
            let (ancount, truncated) = if bytes.len() <= room {
                out.extend_from_slice(bytes);
                (ends.len(), false)
            } else {
                let fit = ends.iter().take_while(|e| **e as usize <= room).count();
                let end = if fit == 0 { 0 } else { ends[fit - 1] as usize };
                out.extend_from_slice(&bytes[..end]);
                (fit, true)
            };
            set_count(out, 0, 1);
            set_count(out, 1, ancount as u16);
            let mut arcount = 0u16;
            if !truncated
                && a.additional_count > 0
                && out.len() + additional.len() + opt_len <= limit
            {
                out.extend_from_slice(additional);
                arcount = a.additional_count;
            }
            if truncated {
                out[2] |= FLAG_TC;
            }
            if let Some(_size) = q.edns {
                push_opt(out, opts.max_udp_payload);
                arcount += 1;
            }
            set_count(out, 3, arcount);
        }
        None => {
            let rcode = if entry.is_some() {
                RCODE_NOERROR
            } else {
                RCODE_NXDOMAIN
            };
            header(out, &q, true, opts.forwarding, rcode);
            out.extend_from_slice(&query[12..q.end]);
            set_count(out, 0, 1);
            if out.len() + zone.soa_rr.len() + opt_len <= limit {
                out.extend_from_slice(&zone.soa_rr);
                set_count(out, 2, 1);
            }
            if q.edns.is_some() {
                push_opt(out, opts.max_udp_payload);
                set_count(out, 3, 1);
            }
        }
    }
    Action::Respond
}

/// Finishes an answer with no records: the question echoed, OPT if the client sent one.
fn finish_simple(out: &mut Vec<u8>, query: &[u8], q: &Question, opts: AnswerOptions) {
    out.extend_from_slice(&query[12..q.end]);
    set_count(out, 0, 1);
    if q.edns.is_some() {
        push_opt(out, opts.max_udp_payload);
        set_count(out, 3, 1);
    }
}

/// Whether `at` starts a label of the encoded name `name`.
fn label_boundary(name: &[u8], at: usize) -> bool {
    let mut i = 0;
    while i < name.len() {
        if i == at {
            return true;
        }
        i += 1 + name[i] as usize;
    }
    i == at
}

/// A SERVFAIL for `query`, when forwarding failed.
pub fn servfail(query: &[u8], out: &mut Vec<u8>) {
    out.clear();
    if query.len() < 12 {
        return;
    }
    out.extend_from_slice(&query[..2]);
    out.push(FLAG_QR | (query[2] & 0x79));
    out.push(FLAG_RA | RCODE_SERVFAIL);
    out.extend_from_slice(&[0; 8]);
    if let Ok(q) = parse(query) {
        out.extend_from_slice(&query[12..q.end]);
        set_count(out, 0, 1);
    }
}

/// The encoded apex of a domain.
pub fn apex_wire(apex: &str) -> Vec<u8> {
    let mut v = Vec::new();
    encode_name(apex, &mut v);
    v
}

/// Builds a query (for tests and the benchmark client).
pub fn build_query(id: u16, name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    push_u16(&mut q, id);
    q.extend_from_slice(&[0x01, 0x00]); // RD
    push_u16(&mut q, 1);
    push_u16(&mut q, 0);
    push_u16(&mut q, 0);
    push_u16(&mut q, u16::from(edns.is_some()));
    for l in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.push(0);
    push_u16(&mut q, qtype);
    push_u16(&mut q, CLASS_IN);
    if let Some(size) = edns {
        push_opt(&mut q, size);
    }
    q
}

/// The address of an `A`/`AAAA` answer record, for tests.
pub fn ip_of(d: &RData) -> Option<IpAddr> {
    match d {
        RData::A(v4) => Some(IpAddr::V4(*v4)),
        RData::Aaaa(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::{RData as HRData, RecordType};

    fn zone() -> (CompiledZone, Vec<u8>) {
        let mut r = Records::default();
        let mut add = |n: &str, d: RData| {
            r.sets
                .entry((n.to_string(), d.rtype()))
                .or_default()
                .push(d);
        };
        for i in 1..=3u8 {
            add(
                "web.marathon.mesos.",
                RData::A(std::net::Ipv4Addr::new(10, 0, 0, i)),
            );
            add(
                &format!("web-{i}.marathon.mesos."),
                RData::A(std::net::Ipv4Addr::new(10, 0, 0, i)),
            );
            add(
                "_web._tcp.marathon.mesos.",
                RData::Srv {
                    priority: 0,
                    weight: 1,
                    port: 31000 + u16::from(i),
                    target: format!("web-{i}.marathon.mesos.").into(),
                },
            );
        }
        for i in 0..100u8 {
            add(
                "big.marathon.mesos.",
                RData::A(std::net::Ipv4Addr::new(10, 1, 0, i)),
            );
        }
        let params = ZoneParams {
            apex: "mesos.".into(),
            ttl: 5,
            negative_ttl: 7,
            serial: 42,
        };
        (CompiledZone::compile(&r, &params), apex_wire("mesos."))
    }

    const OPTS: AnswerOptions = AnswerOptions {
        forwarding: false,
        max_udp_payload: 1232,
    };

    fn ask(name: &str, t: u16, edns: Option<u16>, transport: Transport) -> Message {
        ask_with(name, t, edns, transport, OPTS)
    }

    fn ask_with(
        name: &str,
        t: u16,
        edns: Option<u16>,
        transport: Transport,
        opts: AnswerOptions,
    ) -> Message {
        let (z, apex) = zone();
        let q = build_query(0x1234, name, t, edns);
        let mut out = Vec::new();
        assert_eq!(
            answer(Some(&z), &apex, &q, transport, opts, &mut out),
            Action::Respond
        );
        Message::from_vec(&out).expect("a valid DNS message")
    }

    #[test]
    fn answers_a_records_case_insensitively_with_the_clients_case() {
        let m = ask("WEB.Marathon.mesos", 1, None, Transport::Udp);
        assert_eq!(m.metadata.id, 0x1234);
        assert!(m.metadata.authoritative);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.queries[0].name().to_string(), "WEB.Marathon.mesos.");
        assert_eq!(m.answers.len(), 3);
        for a in &m.answers {
            assert_eq!(a.ttl, 5);
            assert!(matches!(a.data, HRData::A(_)));
        }
    }

    #[test]
    fn srv_answers_carry_target_addresses() {
        let m = ask("_web._tcp.marathon.mesos", 33, None, Transport::Udp);
        assert_eq!(m.answers.len(), 3);
        assert_eq!(m.additionals.len(), 3);
        let HRData::SRV(srv) = &m.answers[0].data else {
            panic!("not SRV")
        };
        assert_eq!(srv.target.to_string(), "web-1.marathon.mesos.");
    }

    #[test]
    fn negative_answers_follow_rfc_2308() {
        let m = ask("nope.marathon.mesos", 1, None, Transport::Udp);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities.len(), 1);
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
        let HRData::SOA(soa) = &m.authorities[0].data else {
            panic!("not SOA")
        };
        assert_eq!(soa.minimum, 7);
        assert_eq!(soa.serial, 42);
        // The name exists without AAAA: NODATA.
        let m = ask("web.marathon.mesos", 28, None, Transport::Udp);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        assert_eq!(m.authorities.len(), 1);
        // An empty non-terminal exists too.
        let m = ask("marathon.mesos", 1, None, Transport::Udp);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        let m = ask("_tcp.marathon.mesos", 33, None, Transport::Udp);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        // The apex answers SOA and NS.
        let m = ask("mesos", TYPE_SOA, None, Transport::Udp);
        assert_eq!(m.answers.len(), 1);
        let m = ask("mesos", TYPE_NS, None, Transport::Udp);
        assert_eq!(m.answers.len(), 1);
    }

    #[test]
    fn large_answers_truncate_over_udp_and_fit_over_tcp_or_edns() {
        let m = ask("big.marathon.mesos", 1, None, Transport::Udp);
        assert!(m.metadata.truncation);
        assert!(m.answers.len() < 100);
        // EDNS lifts the limit to the smaller of the client's and our size.
        let m = ask("big.marathon.mesos", 1, Some(4096), Transport::Udp);
        assert!(m.metadata.truncation);
        assert!(m.answers.len() > 60 && m.answers.len() < 100);
        assert!(m.edns.is_some());
        let big = AnswerOptions {
            max_udp_payload: 4096,
            ..OPTS
        };
        let m = ask_with("big.marathon.mesos", 1, Some(4096), Transport::Udp, big);
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 100);
        let m = ask("big.marathon.mesos", 1, None, Transport::Tcp);
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 100);
    }

    #[test]
    fn outside_the_zone_is_refused_or_forwarded_and_unloaded_is_servfail() {
        let (z, apex) = zone();
        let q = build_query(1, "example.com", 1, None);
        let mut out = Vec::new();
        answer(Some(&z), &apex, &q, Transport::Udp, OPTS, &mut out);
        let m = Message::from_vec(&out).expect("valid");
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        let fwd = AnswerOptions {
            forwarding: true,
            ..OPTS
        };
        assert_eq!(
            answer(Some(&z), &apex, &q, Transport::Udp, fwd, &mut out),
            Action::Forward
        );
        // `xmesos` is not inside `mesos`.
        let q = build_query(1, "web.xmesos", 1, None);
        answer(Some(&z), &apex, &q, Transport::Udp, OPTS, &mut out);
        let m = Message::from_vec(&out).expect("valid");
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        let q = build_query(1, "web.marathon.mesos", 1, None);
        answer(None, &apex, &q, Transport::Udp, OPTS, &mut out);
        let m = Message::from_vec(&out).expect("valid");
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    }

    #[test]
    fn garbage_never_panics() {
        let (z, apex) = zone();
        let mut out = Vec::new();
        let mut seed = 0x2545_f491_u32;
        for len in 0..300 {
            let mut q: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            if q.len() > 2 {
                q[2] &= 0x7F;
            }
            let _ = answer(Some(&z), &apex, &q, Transport::Udp, OPTS, &mut out);
        }
        // A valid query with a truncated question.
        let q = build_query(7, "web.marathon.mesos", 1, None);
        for cut in 12..q.len() {
            let _ = answer(Some(&z), &apex, &q[..cut], Transport::Udp, OPTS, &mut out);
        }
    }
}
