//! Pipeline configuration.
//!
//! ```toml
//! pipeline = "passthrough"                                   # the default
//! pipeline = { decode = [{ type = "gzip" }] }                # receive side
//! pipeline = { decode = [{ type = "zstd", max_size = "2GiB", window_log_max = 27 }] }
//! pipeline = { encode = [{ type = "gzip", level = 9 }] }     # send side
//!
//! [receive_ports.orders.locations.in.pipeline]               # debatching
//! decode = [{ type = "gzip" }]
//! disassemble = { type = "xml", record = "/Orders/Order", promote = { "order.id" = "Order/@id" } }
//! validate = { rule = "order.id exists" }
//! # or: disassemble = { type = "json", array = "/orders", promote = { "order.id" = "/id" } }
//! # or: disassemble = { type = "csv", delimiter = ";", batch = 100 }
//! # or: disassemble = { type = "lines", skip_empty = false }
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::assemble::AssembleConfig;

/// A size in bytes, written as a number or with a unit: `"512KiB"`,
/// `"64MiB"`, `"16GiB"`, `"1TiB"`, `"10MB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{text}` is not a size (e.g. 512KiB, 64MiB, 16GiB)"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            other => {
                return Err(format!(
                    "`{other}` is not a size unit (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
                ));
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("`{text}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: a number of bytes, or a string such as \"64MiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

fn default_max_decoded() -> ByteSize {
    ByteSize(1 << 30)
}
/// The largest zstd window a frame may ask for by default, as a power of
/// two: 2^23 = 8 MiB (enough for every standard level; `zstd --long` needs
/// 27). The library's own default would be 2^27.
pub const DEFAULT_WINDOW_LOG_MAX: u32 = 23;

fn default_window_log_max() -> u32 {
    DEFAULT_WINDOW_LOG_MAX
}

/// `type = "gzip"` decoder. Concatenated gzip members are read as one stream.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GzipDecodeConfig {
    /// Most bytes the decoded stream may have (a decompression bomb stops here).
    #[serde(default = "default_max_decoded")]
    pub max_size: ByteSize,
}

/// `type = "zstd"` decoder.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZstdDecodeConfig {
    #[serde(default = "default_max_decoded")]
    pub max_size: ByteSize,
    /// Largest window a frame may ask for, as a power of two (default 23 =
    /// 8 MiB, enough for every standard level; `zstd --long` needs 27). The
    /// decoder's memory is about the window, per file in flight.
    #[serde(default = "default_window_log_max")]
    pub window_log_max: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum DecodeConfig {
    Gzip(GzipDecodeConfig),
    Zstd(ZstdDecodeConfig),
}

fn default_gzip_level() -> u32 {
    6
}
fn default_zstd_level() -> i32 {
    3
}

/// `type = "gzip"` encoder, `level` 0 (store) to 9 (smallest), default 6 like `gzip`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GzipEncodeConfig {
    #[serde(default = "default_gzip_level")]
    pub level: u32,
}

/// `type = "zstd"` encoder, `level` 1 to 22, default 3 like `zstd`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZstdEncodeConfig {
    #[serde(default = "default_zstd_level")]
    pub level: i32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum EncodeConfig {
    Gzip(GzipEncodeConfig),
    Zstd(ZstdEncodeConfig),
}

/// Largest `max_record_size` accepted: records are held in memory.
const MAX_RECORD_LIMIT: u64 = 256 << 20;

fn default_max_record() -> ByteSize {
    ByteSize(1 << 20)
}
fn default_true() -> bool {
    true
}
fn default_batch() -> u32 {
    1
}
fn default_delimiter() -> char {
    ','
}

/// `type = "xml"`: each element at `record` (e.g. `/Orders/Order`) becomes a
/// message, with the namespace declarations in scope copied onto it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmlDisassembleConfig {
    /// Absolute path of the repeating element, by local names: `/Orders/Order`.
    pub record: String,
    #[serde(default = "default_max_record")]
    pub max_record_size: ByteSize,
    #[serde(default)]
    pub recoverable: bool,
    /// Property (`ns.name`) → path inside the record, starting with the
    /// record's own element: `Order/@id`, `Order/Customer`, `Order/Ship/@country`.
    #[serde(default)]
    pub promote: BTreeMap<String, String>,
}

/// `type = "json"`: each element of the array at `array` (a JSON pointer;
/// `""`, the default, is a top-level array) becomes a message.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonDisassembleConfig {
    #[serde(default)]
    pub array: String,
    #[serde(default = "default_max_record")]
    pub max_record_size: ByteSize,
    #[serde(default)]
    pub recoverable: bool,
    /// Property (`ns.name`) → JSON pointer inside the record (`/id`, `/customer/name`).
    #[serde(default)]
    pub promote: BTreeMap<String, String>,
}

/// `type = "csv"`: each record (or each `batch` records) becomes a message.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvDisassembleConfig {
    /// The first record is a header: it names the columns and is repeated at
    /// the top of every message.
    #[serde(default = "default_true")]
    pub header: bool,
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// Records per message.
    #[serde(default = "default_batch")]
    pub batch: u32,
    #[serde(default = "default_max_record")]
    pub max_record_size: ByteSize,
    #[serde(default)]
    pub recoverable: bool,
    /// Property (`ns.name`) → column name (with a header) or `#N` (1-based
    /// column number). Only with `batch = 1`.
    #[serde(default)]
    pub promote: BTreeMap<String, String>,
}

/// `type = "lines"`: each line (or each `batch` lines) becomes a message.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinesDisassembleConfig {
    #[serde(default = "default_batch")]
    pub batch: u32,
    #[serde(default = "default_max_record")]
    pub max_record_size: ByteSize,
    #[serde(default)]
    pub recoverable: bool,
    /// Skip empty lines instead of making empty messages.
    #[serde(default = "default_true")]
    pub skip_empty: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum DisassembleConfig {
    Xml(XmlDisassembleConfig),
    Json(JsonDisassembleConfig),
    Csv(CsvDisassembleConfig),
    Lines(LinesDisassembleConfig),
}

impl DisassembleConfig {
    /// The component name used in errors: `xml`, `json`, `csv`, `lines`.
    pub fn component(&self) -> &'static str {
        match self {
            DisassembleConfig::Xml(_) => "xml",
            DisassembleConfig::Json(_) => "json",
            DisassembleConfig::Csv(_) => "csv",
            DisassembleConfig::Lines(_) => "lines",
        }
    }
    /// With `recoverable = true` a bad record is suspended alone and the
    /// rest of the interchange is published; otherwise the interchange is
    /// published whole or suspended whole.
    pub fn recoverable(&self) -> bool {
        match self {
            DisassembleConfig::Xml(c) => c.recoverable,
            DisassembleConfig::Json(c) => c.recoverable,
            DisassembleConfig::Csv(c) => c.recoverable,
            DisassembleConfig::Lines(c) => c.recoverable,
        }
    }
    pub fn max_record_size(&self) -> ByteSize {
        match self {
            DisassembleConfig::Xml(c) => c.max_record_size,
            DisassembleConfig::Json(c) => c.max_record_size,
            DisassembleConfig::Csv(c) => c.max_record_size,
            DisassembleConfig::Lines(c) => c.max_record_size,
        }
    }
    fn promote(&self) -> Option<&BTreeMap<String, String>> {
        match self {
            DisassembleConfig::Xml(c) => Some(&c.promote),
            DisassembleConfig::Json(c) => Some(&c.promote),
            DisassembleConfig::Csv(c) => Some(&c.promote),
            DisassembleConfig::Lines(_) => None,
        }
    }
}

/// `validate = { rule = "order.id exists and order.total > 0" }`: every
/// record (after promotion) must satisfy the rule, written in the filter
/// language; one that does not is a bad record.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateConfig {
    pub rule: String,
}

/// A receive location's pipeline: `"passthrough"` or a table of stages.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiveStages {
    #[serde(default)]
    decode: Vec<DecodeConfig>,
    #[serde(default)]
    disassemble: Option<DisassembleConfig>,
    #[serde(default)]
    validate: Option<ValidateConfig>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReceivePipelineConfig {
    pub decode: Vec<DecodeConfig>,
    pub disassemble: Option<DisassembleConfig>,
    pub validate: Option<ValidateConfig>,
}

/// A send port's pipeline: `"passthrough"` or a table of stages.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendStages {
    #[serde(default)]
    assemble: Option<AssembleConfig>,
    #[serde(default)]
    encode: Vec<EncodeConfig>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SendPipelineConfig {
    pub assemble: Option<AssembleConfig>,
    pub encode: Vec<EncodeConfig>,
}

impl ReceivePipelineConfig {
    pub fn validate(&self) -> Result<(), String> {
        for d in &self.decode {
            let (name, max) = match d {
                DecodeConfig::Gzip(g) => ("gzip", g.max_size),
                DecodeConfig::Zstd(z) => {
                    if !(10..=31).contains(&z.window_log_max) {
                        return Err(format!("zstd window_log_max {} is not 10 to 31", z.window_log_max));
                    }
                    ("zstd", z.max_size)
                }
            };
            if max.0 < 1024 {
                return Err(format!(
                    "{name} max_size {max} is below 1 KiB; every file would be rejected"
                ));
            }
        }
        if let Some(d) = &self.disassemble {
            let name = d.component();
            if d.max_record_size().0 > MAX_RECORD_LIMIT {
                return Err(format!(
                    "disassemble ({name}) max_record_size {} is over 256 MiB; records are held in memory, one at a time",
                    d.max_record_size()
                ));
            }
            if d.max_record_size().0 < 16 {
                return Err(format!(
                    "disassemble ({name}) max_record_size {} is below 16 bytes",
                    d.max_record_size()
                ));
            }
            for key in d.promote().into_iter().flat_map(|p| p.keys()) {
                crate::disassemble::property_key(key)
                    .map_err(|e| format!("disassemble ({name}) promote `{key}`: {e}"))?;
            }
            crate::disassemble::check(d)?;
        }
        if let Some(v) = &self.validate {
            sluice_model::Filter::parse(&v.rule).map_err(|e| format!("validate rule `{}`: {e}", v.rule))?;
            if self.disassemble.is_none() {
                return Err("validate needs a disassembler (it checks each record's promoted properties)".into());
            }
        }
        Ok(())
    }
}

impl SendPipelineConfig {
    pub fn validate(&self) -> Result<(), String> {
        for e in &self.encode {
            match e {
                EncodeConfig::Gzip(g) if g.level > 9 => return Err(format!("gzip level {} is not 0 to 9", g.level)),
                EncodeConfig::Zstd(z) if !(1..=22).contains(&z.level) => {
                    return Err(format!("zstd level {} is not 1 to 22", z.level));
                }
                _ => {}
            }
        }
        if let Some(a) = &self.assemble {
            a.validate()?;
        }
        Ok(())
    }
}

/// Accept the string `"passthrough"` or a table of stages, keeping serde's
/// precise errors for the table.
fn stages_or_passthrough<'de, D, T>(d: D, what: &'static str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    struct V<T>(std::marker::PhantomData<T>, &'static str);
    impl<'de, T: Deserialize<'de> + Default> Visitor<'de> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "\"passthrough\" or a table of {} stages", self.1)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            match v {
                "passthrough" => Ok(T::default()),
                other => Err(E::custom(format!(
                    "unknown pipeline `{other}` (use \"passthrough\" or a table of stages)"
                ))),
            }
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_any(V(std::marker::PhantomData, what))
}

impl<'de> Deserialize<'de> for ReceivePipelineConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: ReceiveStages = stages_or_passthrough(d, "receive (decode, disassemble, validate)")?;
        Ok(ReceivePipelineConfig {
            decode: s.decode,
            disassemble: s.disassemble,
            validate: s.validate,
        })
    }
}

impl<'de> Deserialize<'de> for SendPipelineConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: SendStages = stages_or_passthrough(d, "send (assemble, encode)")?;
        Ok(SendPipelineConfig {
            assemble: s.assemble,
            encode: s.encode,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct R {
        pipeline: ReceivePipelineConfig,
    }
    #[derive(Deserialize)]
    struct S {
        pipeline: SendPipelineConfig,
    }

    #[test]
    fn parses_both_forms() {
        let r: R = toml::from_str(r#"pipeline = "passthrough""#).unwrap();
        assert_eq!(r.pipeline, ReceivePipelineConfig::default());
        let r: R =
            toml::from_str(r#"pipeline = { decode = [{ type = "gzip", max_size = "1GiB" }, { type = "zstd" }] }"#)
                .unwrap();
        assert_eq!(
            r.pipeline.decode,
            vec![
                DecodeConfig::Gzip(GzipDecodeConfig {
                    max_size: ByteSize(1 << 30)
                }),
                DecodeConfig::Zstd(ZstdDecodeConfig {
                    max_size: ByteSize(1 << 30),
                    window_log_max: 23
                }),
            ]
        );
        let s: S = toml::from_str(r#"pipeline = { encode = [{ type = "gzip", level = 9 }] }"#).unwrap();
        assert_eq!(
            s.pipeline.encode,
            vec![EncodeConfig::Gzip(GzipEncodeConfig { level: 9 })]
        );
    }

    #[test]
    fn errors_are_precise() {
        let e = toml::from_str::<R>(r#"pipeline = "fancy""#).err().unwrap().to_string();
        assert!(e.contains("unknown pipeline `fancy`"), "{e}");
        let e = toml::from_str::<R>(r#"pipeline = { decod = [] }"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("unknown field `decod`"), "{e}");
        let e = toml::from_str::<R>(r#"pipeline = { decode = [{ type = "gzip", max = 1 }] }"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("unknown field `max`"), "{e}");
        let e = toml::from_str::<R>(r#"pipeline = { decode = [{ type = "gzip", max_size = "1 parsec" }] }"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not a size unit"), "{e}");
        let r: R = toml::from_str(r#"pipeline = { decode = [{ type = "gzip", max_size = 0 }] }"#).unwrap();
        assert!(r.pipeline.validate().unwrap_err().contains("below 1 KiB"));
        let s: S = toml::from_str(r#"pipeline = { encode = [{ type = "gzip", level = 12 }] }"#).unwrap();
        assert!(s.pipeline.validate().unwrap_err().contains("gzip level 12"));
    }
}
