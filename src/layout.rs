//! The record layout each daemon publishes in the kept `layout` map
//! (`struct event_layout_desc`, fixed across versions), and the translation
//! of another layout's records into this build's by field name, so that an
//! upgrade delivers what the previous daemon left in its ring buffer
//! (docs/design.md, "Restart and upgrade").

use std::mem::{offset_of, size_of};

use libbpf_rs::btf::types as bt;
use libbpf_rs::btf::{Btf, BtfKind, BtfType, HasSize};

use crate::bpf_loader::types;

/// Bytes of a field name in the description, NUL-padded.
pub const NAME_LEN: usize = types::event_layout_desc_limits::EVENT_LAYOUT_NAME_LEN.0 as usize;
/// Fields a description holds, at most.
pub const FIELDS_MAX: usize = types::event_layout_desc_limits::EVENT_LAYOUT_FIELDS_MAX.0 as usize;
/// Bytes of the `layout` map's value.
pub const DESC_LEN: usize = size_of::<types::event_layout_desc>();

const FIELD_LEN: usize = size_of::<types::event_layout_field>();

/// Every layout's first field, and its size.
const SEQ: &str = "seq";

/// Why a layout could not be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("layout description of {0} bytes, not {DESC_LEN}")]
    Length(usize),
    #[error("layout description not filled in")]
    Empty,
    #[error("layout description has {0} fields, more than {FIELDS_MAX}")]
    TooManyFields(u32),
    #[error("layout field {0}: its name is not NUL-terminated UTF-8")]
    BadName(usize),
    #[error("layout field {name}: bytes {offset}..{end} are outside the {header_len}-byte header")]
    OutsideHeader {
        name: String,
        offset: u32,
        end: u64,
        header_len: u32,
    },
    #[error("layout field {0} is described twice")]
    Duplicate(String),
    #[error("no struct event in the BPF object's BTF")]
    NoStruct,
    #[error("struct event field {0}: a bitfield, unaligned, or of no known size")]
    Unsized(String),
    #[error("struct event field {0:?}: no name, or longer than {max} bytes", max = NAME_LEN - 1)]
    LongName(String),
}

/// Why another layout's records cannot be translated into this one's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    #[error("the {which} layout has no 8-byte `seq` at offset 0")]
    NoSeq { which: &'static str },
    #[error("field {name} has {old} bytes in the previous layout and {new} in this one")]
    SizeChanged { name: String, old: u32, new: u32 },
    #[error(
        "record of {len} bytes is shorter than the previous layout's {header_len}-byte header"
    )]
    Short { len: usize, header_len: usize },
}

/// One field of `struct event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// Bytes from the start of the record.
    pub offset: u32,
    pub size: u32,
}

/// `struct event` of one build: its fields and header length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `EVENT_LAYOUT_VERSION` of that build.
    pub version: u32,
    /// Kernel id of the ring buffer the records in this layout are in (0:
    /// not said): binds a kept description to the kept buffer.
    pub events_map_id: u32,
    /// Bytes of the fixed header: the variable parts follow it.
    pub header_len: u32,
    pub fields: Vec<Field>,
}

/// `reserved`, `reserved2`...: padding, never read.
fn is_padding(name: &str) -> bool {
    name.starts_with("reserved")
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

/// Bytes of a BTF type, through typedefs, qualifiers and arrays.
fn type_size(t: BtfType<'_>) -> Option<usize> {
    let t = t.skip_mods_and_typedefs();
    match t.kind() {
        BtfKind::Array => {
            let a = bt::Array::try_from(t).ok()?;
            a.capacity().checked_mul(type_size(a.contained_type())?)
        }
        BtfKind::Int => bt::Int::try_from(t).ok().map(|x| x.size()),
        BtfKind::Enum => bt::Enum::try_from(t).ok().map(|x| x.size()),
        BtfKind::Enum64 => bt::Enum64::try_from(t).ok().map(|x| x.size()),
        BtfKind::Struct => bt::Struct::try_from(t).ok().map(|x| x.size()),
        BtfKind::Union => bt::Union::try_from(t).ok().map(|x| x.size()),
        BtfKind::Float => bt::Float::try_from(t).ok().map(|x| x.size()),
        _ => None,
    }
}

impl Layout {
    /// This build's `struct event`, from the BTF of its BPF object: the
    /// header file stays the one definition.
    pub fn from_btf(btf: &Btf<'_>) -> Result<Layout, LayoutError> {
        let ev = btf
            .type_by_kind::<bt::Struct<'_>>()
            .find(|s| s.name().is_some_and(|n| n == "event"))
            .ok_or(LayoutError::NoStruct)?;
        let mut fields = Vec::with_capacity(ev.len());
        for m in ev.iter() {
            let name = m.name.and_then(|n| n.to_str()).unwrap_or_default();
            if name.is_empty() || name.len() >= NAME_LEN {
                return Err(LayoutError::LongName(name.to_string()));
            }
            let unsized_ = || LayoutError::Unsized(name.to_string());
            let bt::MemberAttr::Normal { offset: bits } = m.attr else {
                return Err(unsized_());
            };
            let size = btf
                .type_by_id::<BtfType<'_>>(m.ty)
                .and_then(type_size)
                .and_then(|s| u32::try_from(s).ok())
                .ok_or_else(unsized_)?;
            if bits % 8 != 0 {
                return Err(unsized_());
            }
            fields.push(Field {
                name: name.to_string(),
                offset: bits / 8,
                size,
            });
        }
        if fields.len() > FIELDS_MAX {
            return Err(LayoutError::TooManyFields(fields.len() as u32));
        }
        Ok(Layout {
            version: crate::handover::LAYOUT_VERSION,
            events_map_id: 0,
            header_len: u32::try_from(ev.size()).map_err(|_| LayoutError::NoStruct)?,
            fields,
        })
    }

    /// The `layout` map's value. Names longer than the slot are cut (a
    /// layout from [`Layout::from_btf`] has none).
    pub fn to_bytes(&self) -> Vec<u8> {
        use types::event_layout_desc as D;
        use types::event_layout_field as F;
        let mut b = vec![0u8; DESC_LEN];
        put_u32(&mut b, offset_of!(D, version), self.version);
        put_u32(&mut b, offset_of!(D, header_len), self.header_len);
        put_u32(&mut b, offset_of!(D, events_map_id), self.events_map_id);
        let n = self.fields.len().min(FIELDS_MAX);
        put_u32(&mut b, offset_of!(D, nr_fields), n as u32);
        for (i, f) in self.fields.iter().take(n).enumerate() {
            let at = offset_of!(D, fields) + i * FIELD_LEN;
            let name = &f.name.as_bytes()[..f.name.len().min(NAME_LEN - 1)];
            let name_at = at + offset_of!(F, name);
            b[name_at..name_at + name.len()].copy_from_slice(name);
            put_u32(&mut b, at + offset_of!(F, offset), f.offset);
            put_u32(&mut b, at + offset_of!(F, size), f.size);
        }
        b
    }

    /// A `layout` map's value, checked: every field inside the header, each
    /// name once.
    pub fn from_bytes(b: &[u8]) -> Result<Layout, LayoutError> {
        use types::event_layout_desc as D;
        use types::event_layout_field as F;
        if b.len() != DESC_LEN {
            return Err(LayoutError::Length(b.len()));
        }
        let version = u32_at(b, offset_of!(D, version));
        let header_len = u32_at(b, offset_of!(D, header_len));
        let events_map_id = u32_at(b, offset_of!(D, events_map_id));
        let n = u32_at(b, offset_of!(D, nr_fields));
        if n == 0 || header_len == 0 {
            return Err(LayoutError::Empty);
        }
        if n as usize > FIELDS_MAX {
            return Err(LayoutError::TooManyFields(n));
        }
        let mut fields: Vec<Field> = Vec::with_capacity(n as usize);
        for i in 0..n as usize {
            let at = offset_of!(D, fields) + i * FIELD_LEN;
            let raw = &b[at + offset_of!(F, name)..][..NAME_LEN];
            let end = raw
                .iter()
                .position(|&c| c == 0)
                .ok_or(LayoutError::BadName(i))?;
            let name = std::str::from_utf8(&raw[..end])
                .ok()
                .filter(|s| !s.is_empty())
                .ok_or(LayoutError::BadName(i))?;
            let offset = u32_at(b, at + offset_of!(F, offset));
            let size = u32_at(b, at + offset_of!(F, size));
            let end = u64::from(offset) + u64::from(size);
            if size == 0 || end > u64::from(header_len) {
                return Err(LayoutError::OutsideHeader {
                    name: name.to_string(),
                    offset,
                    end,
                    header_len,
                });
            }
            if fields.iter().any(|f| f.name == name) {
                return Err(LayoutError::Duplicate(name.to_string()));
            }
            fields.push(Field {
                name: name.to_string(),
                offset,
                size,
            });
        }
        Ok(Layout {
            version,
            events_map_id,
            header_len,
            fields,
        })
    }

    fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    fn has_seq_first(&self) -> bool {
        self.field(SEQ)
            .is_some_and(|f| f.offset == 0 && f.size == 8)
    }
}

/// One field's bytes, old record to new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Copy {
    from: usize,
    to: usize,
    len: usize,
}

/// How to turn a record of an older (or newer) layout into this build's:
/// the fields of the same name copied, the others of this layout zero, the
/// variable parts appended after this layout's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    /// The previous layout's version.
    pub from_version: u32,
    old_header_len: usize,
    new_header_len: usize,
    copies: Vec<Copy>,
    /// This layout's fields the previous one lacks: zero in its records.
    pub zero_filled: Vec<String>,
    /// The previous layout's fields this one lacks: dropped.
    pub dropped: Vec<String>,
}

impl Translation {
    /// Refused when a field of both layouts changed size, or either has no
    /// sequence number first.
    pub fn new(old: &Layout, new: &Layout) -> Result<Translation, TranslateError> {
        if !old.has_seq_first() {
            return Err(TranslateError::NoSeq { which: "previous" });
        }
        if !new.has_seq_first() {
            return Err(TranslateError::NoSeq { which: "new" });
        }
        let mut copies = Vec::with_capacity(new.fields.len());
        let mut zero_filled = Vec::new();
        for f in &new.fields {
            match old.field(&f.name) {
                Some(o) if o.size == f.size => copies.push(Copy {
                    from: o.offset as usize,
                    to: f.offset as usize,
                    len: f.size as usize,
                }),
                // Padding, which a new field may be carved out of: it holds
                // nothing to carry over.
                Some(_) if is_padding(&f.name) => zero_filled.push(f.name.clone()),
                Some(o) => {
                    return Err(TranslateError::SizeChanged {
                        name: f.name.clone(),
                        old: o.size,
                        new: f.size,
                    })
                }
                None => zero_filled.push(f.name.clone()),
            }
        }
        let dropped = old
            .fields
            .iter()
            .filter(|o| new.field(&o.name).is_none())
            .map(|o| o.name.clone())
            .collect();
        Ok(Translation {
            from_version: old.version,
            old_header_len: old.header_len as usize,
            new_header_len: new.header_len as usize,
            copies,
            zero_filled,
            dropped,
        })
    }

    /// `record` in this build's layout, built in `out` (reused: no
    /// allocation once it has grown to the largest record).
    pub fn translate<'o>(
        &self,
        record: &[u8],
        out: &'o mut Vec<u8>,
    ) -> Result<&'o [u8], TranslateError> {
        let (header, tail) =
            record
                .split_at_checked(self.old_header_len)
                .ok_or(TranslateError::Short {
                    len: record.len(),
                    header_len: self.old_header_len,
                })?;
        out.clear();
        out.resize(self.new_header_len, 0);
        for c in &self.copies {
            // Both checked against their header lengths when the layouts
            // were read.
            out[c.to..c.to + c.len].copy_from_slice(&header[c.from..c.from + c.len]);
        }
        out.extend_from_slice(tail);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn field(name: &str, offset: u32, size: u32) -> Field {
        Field {
            name: name.into(),
            offset,
            size,
        }
    }

    /// seq, a, b, and with `extra` a trailing u64, as the test-only build.
    fn layout(version: u32, extra: bool) -> Layout {
        let mut fields = vec![field("seq", 0, 8), field("a", 8, 4), field("b", 12, 4)];
        if extra {
            fields.push(field("test_layout", 16, 8));
        }
        Layout {
            events_map_id: 0,
            version,
            header_len: if extra { 24 } else { 16 },
            fields,
        }
    }

    fn record(seq: u64, a: u32, b: u32, extra: Option<u64>, tail: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&seq.to_ne_bytes());
        r.extend_from_slice(&a.to_ne_bytes());
        r.extend_from_slice(&b.to_ne_bytes());
        if let Some(x) = extra {
            r.extend_from_slice(&x.to_ne_bytes());
        }
        r.extend_from_slice(tail);
        r
    }

    #[test]
    fn a_trailing_field_is_dropped_one_way_and_zero_filled_the_other() {
        let (plain, test) = (layout(1, false), layout(1001, true));
        let down = Translation::new(&test, &plain).unwrap();
        assert_eq!(down.dropped, ["test_layout"]);
        assert!(down.zero_filled.is_empty());
        let mut out = Vec::new();
        let got = down
            .translate(&record(7, 1, 2, Some(u64::MAX), b"tail\0"), &mut out)
            .unwrap();
        assert_eq!(got, record(7, 1, 2, None, b"tail\0"));

        let up = Translation::new(&plain, &test).unwrap();
        assert_eq!(up.zero_filled, ["test_layout"]);
        assert_eq!(up.from_version, 1);
        let got = up
            .translate(&record(8, 3, 4, None, b"xyz"), &mut out)
            .unwrap();
        assert_eq!(got, record(8, 3, 4, Some(0), b"xyz"));
    }

    #[test]
    fn fields_are_matched_by_name_wherever_they_moved() {
        let old = Layout {
            events_map_id: 0,
            version: 1,
            header_len: 16,
            fields: vec![field("seq", 0, 8), field("b", 8, 4), field("a", 12, 4)],
        };
        let t = Translation::new(&old, &layout(2, false)).unwrap();
        let mut out = Vec::new();
        // Old order: b then a.
        let got = t
            .translate(&record(5, 20, 10, None, b""), &mut out)
            .unwrap();
        assert_eq!(got, record(5, 10, 20, None, b""));
    }

    #[test]
    fn a_field_missing_from_the_old_layout_reads_as_zero() {
        let old = Layout {
            events_map_id: 0,
            version: 1,
            header_len: 12,
            fields: vec![field("seq", 0, 8), field("a", 8, 4)],
        };
        let t = Translation::new(&old, &layout(2, false)).unwrap();
        assert_eq!(t.zero_filled, ["b"]);
        let mut out = vec![0xff; 100]; // leftovers from an earlier record
        let mut rec = 9u64.to_ne_bytes().to_vec();
        rec.extend_from_slice(&6u32.to_ne_bytes());
        rec.extend_from_slice(b"data");
        let got = t.translate(&rec, &mut out).unwrap();
        assert_eq!(got, record(9, 6, 0, None, b"data"));
    }

    #[test]
    fn a_field_of_another_size_is_refused() {
        let mut old = layout(1, false);
        old.fields[1].size = 2;
        assert_eq!(
            Translation::new(&old, &layout(2, false)),
            Err(TranslateError::SizeChanged {
                name: "a".into(),
                old: 2,
                new: 4
            })
        );
    }

    #[test]
    fn a_field_carved_out_of_padding_keeps_the_rest_translatable() {
        // Old: seq, a, reserved[2] (u16 each); new: seq, a, flags, reserved[1].
        let old = Layout {
            events_map_id: 0,
            version: 1,
            header_len: 16,
            fields: vec![
                field("seq", 0, 8),
                field("a", 8, 4),
                field("reserved", 12, 4),
            ],
        };
        let new = Layout {
            events_map_id: 0,
            version: 2,
            header_len: 16,
            fields: vec![
                field("seq", 0, 8),
                field("a", 8, 4),
                field("flags", 12, 2),
                field("reserved", 14, 2),
            ],
        };
        let t = Translation::new(&old, &new).unwrap();
        assert_eq!(t.zero_filled, ["flags", "reserved"]);
        let mut out = Vec::new();
        let mut rec = record(3, 4, u32::MAX, None, b"t");
        let got = t.translate(&rec, &mut out).unwrap().to_vec();
        rec[12..16].fill(0);
        assert_eq!(got, rec);
    }

    #[test]
    fn a_layout_without_seq_first_is_refused() {
        let mut old = layout(1, false);
        old.fields[0].offset = 8;
        old.fields[1].offset = 0;
        assert_eq!(
            Translation::new(&old, &layout(2, false)),
            Err(TranslateError::NoSeq { which: "previous" })
        );
    }

    #[test]
    fn a_record_shorter_than_the_old_header_is_refused() {
        let t = Translation::new(&layout(1001, true), &layout(1, false)).unwrap();
        let mut out = Vec::new();
        for len in [0, 7, 8, 23] {
            assert_eq!(
                t.translate(&[0u8; 24][..len], &mut out),
                Err(TranslateError::Short {
                    len,
                    header_len: 24
                })
            );
        }
        assert_eq!(t.translate(&[0u8; 24], &mut out).unwrap().len(), 16);
    }

    #[test]
    fn descriptions_round_trip_through_the_maps_bytes() {
        let l = layout(1001, true);
        let b = l.to_bytes();
        assert_eq!(b.len(), DESC_LEN);
        assert_eq!(Layout::from_bytes(&b), Ok(l));
    }

    #[test]
    fn odd_descriptions_are_refused() {
        use types::event_layout_desc as D;
        let good = layout(1, false).to_bytes();
        assert_eq!(
            Layout::from_bytes(&good[1..]),
            Err(LayoutError::Length(DESC_LEN - 1))
        );
        assert_eq!(
            Layout::from_bytes(&[0u8; DESC_LEN]),
            Err(LayoutError::Empty)
        );
        let mut b = good.clone();
        put_u32(&mut b, offset_of!(D, nr_fields), FIELDS_MAX as u32 + 1);
        assert!(matches!(
            Layout::from_bytes(&b),
            Err(LayoutError::TooManyFields(_))
        ));
        let mut b = good.clone();
        put_u32(&mut b, offset_of!(D, header_len), 15);
        assert!(matches!(
            Layout::from_bytes(&b),
            Err(LayoutError::OutsideHeader { .. })
        ));
        let mut dup = layout(1, false);
        dup.fields[2].name = "a".into();
        assert_eq!(
            Layout::from_bytes(&dup.to_bytes()),
            Err(LayoutError::Duplicate("a".into()))
        );
        let mut b = good;
        let name_at = offset_of!(D, fields);
        b[name_at..name_at + NAME_LEN].fill(b'x'); // no NUL
        assert_eq!(Layout::from_bytes(&b), Err(LayoutError::BadName(0)));
    }

    /// This build's description, from the BTF of its own BPF object (the
    /// embedded ELF, opened without loading).
    fn this_build() -> Layout {
        use libbpf_rs::skel::{OpenSkel, SkelBuilder};
        use libbpf_rs::AsRawLibbpf;
        let mut storage = std::mem::MaybeUninit::uninit();
        let open = crate::bpf_loader::skel::ExecveSkelBuilder::default()
            .open(&mut storage)
            .unwrap();
        let obj = open.open_object().as_libbpf_object();
        // SAFETY: the pointer is the open object's, which outlives `btf`.
        let btf = Btf::from_bpf_object(unsafe { obj.as_ref() })
            .unwrap()
            .expect("the object has BTF");
        Layout::from_btf(&btf).unwrap()
    }

    #[test]
    fn this_builds_layout_is_struct_event_and_fits_the_description() {
        use types::event as E;
        let l = this_build();
        assert_eq!(l.header_len as usize, crate::bpf_loader::HEADER_LEN);
        assert!(l.fields.len() <= FIELDS_MAX);
        assert_eq!(l.version, crate::handover::LAYOUT_VERSION);
        let f = |n: &str| l.field(n).unwrap_or_else(|| panic!("no {n}")).clone();
        assert_eq!(f("seq"), field("seq", offset_of!(E, seq) as u32, 8));
        assert_eq!(f("pid").offset as usize, offset_of!(E, pid));
        assert_eq!(f("comm").size, 16);
        assert_eq!(f("reserved").size, 6);
        assert_eq!(f("env_len").offset as usize, offset_of!(E, env_len));
        // Through the map's bytes, and an identity translation.
        assert_eq!(Layout::from_bytes(&l.to_bytes()).as_ref(), Ok(&l));
        let t = Translation::new(&l, &l).unwrap();
        assert!(t.zero_filled.is_empty() && t.dropped.is_empty());
        let rec: Vec<u8> = (0..l.header_len as usize + 40).map(|i| i as u8).collect();
        assert_eq!(t.translate(&rec, &mut Vec::new()).unwrap(), rec);
    }

    #[test]
    fn a_translated_record_decodes_as_the_original() {
        use crate::decode::record::Record;
        use crate::decode::ExecEvent;
        let ours = this_build();
        // The same fields after 8 extra bytes (a field this build lacks).
        let mut old = ours.clone();
        old.version += 1;
        old.header_len += 8;
        for f in old.fields.iter_mut().skip(1) {
            f.offset += 8;
        }
        old.fields.push(field("gone", 8, 8));
        let t = Translation::new(&old, &ours).unwrap();
        let mut rec = Record::exec(&[b"/bin/true", b"x"]);
        rec.filename = b"/bin/true\0".to_vec();
        let native = rec.encode();
        let mut shifted = native[..8].to_vec();
        shifted.extend_from_slice(&[0xee; 8]);
        shifted.extend_from_slice(&native[8..]);
        let mut out = Vec::new();
        let translated = t.translate(&shifted, &mut out).unwrap();
        assert_eq!(translated, &native[..]);
        assert_eq!(
            ExecEvent::decode(translated).unwrap(),
            ExecEvent::decode(&native).unwrap()
        );
    }

    fn arb_layout() -> impl Strategy<Value = Layout> {
        // Up to 6 fields named f0..f5, sizes from {1, 2, 4, 8}, at
        // arbitrary offsets inside a header of up to 64 bytes.
        (
            16u32..64,
            proptest::collection::vec((0u32..64, 0usize..4, any::<bool>()), 0..6),
        )
            .prop_map(|(header_len, fs)| {
                let mut fields = vec![field("seq", 0, 8)];
                for (i, (off, size, present)) in fs.into_iter().enumerate() {
                    let size = [1, 2, 4, 8][size];
                    if present {
                        fields.push(field(
                            &format!("f{i}"),
                            8 + off % (header_len - 8 - size + 1),
                            size,
                        ));
                    }
                }
                Layout {
                    events_map_id: 0,
                    version: 1,
                    header_len,
                    fields,
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn translation_never_panics_and_keeps_seq_and_tail(
            old in arb_layout(),
            new in arb_layout(),
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let Ok(t) = Translation::new(&old, &new) else {
                return Ok(());
            };
            let mut out = Vec::new();
            match t.translate(&bytes, &mut out) {
                Ok(r) => {
                    prop_assert_eq!(r.len(), bytes.len() - old.header_len as usize + new.header_len as usize);
                    prop_assert_eq!(&r[..8], &bytes[..8]);
                    prop_assert_eq!(&r[new.header_len as usize..], &bytes[old.header_len as usize..]);
                }
                Err(e) => prop_assert!(bytes.len() < old.header_len as usize, "{e}"),
            }
        }

        #[test]
        fn damaged_descriptions_never_panic(
            l in arb_layout(),
            damage in proptest::collection::vec((0..DESC_LEN, any::<u8>()), 0..8),
        ) {
            let mut bytes = l.to_bytes();
            for (at, b) in damage {
                bytes[at] = b;
            }
            if let Ok(l) = Layout::from_bytes(&bytes) {
                prop_assert!(l.fields.iter().all(|f| f.offset + f.size <= l.header_len));
                let t = Translation::new(&l, &layout(1, false));
                if let Ok(t) = t {
                    let _ = t.translate(&bytes[..100], &mut Vec::new());
                }
            }
        }
    }
}
