//! `.modinfo`: the module's metadata as NUL-separated `key=value` records, readable without
//! running the file (the kernel's `.modinfo` section, read by kmod's `modinfo`).
//!
//! Keys: `name`, `version`, `description`, `author`, `license`, `abi` (`MAJOR.MINOR`),
//! `depends` (comma-separated module names, may be empty), and one `parm` per parameter
//! (`parm=name:type:description`, type one of `int`, `uint`, `bool`, `str`). `name`, `abi` and
//! `license` are required; every key but `parm` may appear once; unknown keys are kept.
//!
//! The parser reads untrusted bytes: it never panics, and allocates at most in proportion to
//! its input, whose size it caps at [`MAX_SECTION`].

use std::fmt;

/// Largest `.modinfo` section accepted.
pub const MAX_SECTION: usize = 64 * 1024;
/// Most records accepted.
pub const MAX_RECORDS: usize = 1024;

/// A parameter's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamType {
    /// Signed 64-bit integer.
    Int,
    /// Unsigned 64-bit integer.
    Uint,
    /// `true`/`false`, `1`/`0`, `y`/`n`.
    Bool,
    /// Any UTF-8 string without NUL.
    Str,
}

impl ParamType {
    /// Parse a type name.
    pub fn parse(s: &str) -> Option<ParamType> {
        match s {
            "int" => Some(ParamType::Int),
            "uint" => Some(ParamType::Uint),
            "bool" => Some(ParamType::Bool),
            "str" | "charp" | "string" => Some(ParamType::Str),
            _ => None,
        }
    }

    /// Is `value` valid for this type?
    pub fn accepts(self, value: &str) -> bool {
        match self {
            ParamType::Int => value.parse::<i64>().is_ok(),
            ParamType::Uint => value.parse::<u64>().is_ok(),
            ParamType::Bool => {
                matches!(value, "1" | "0" | "y" | "n" | "Y" | "N" | "true" | "false")
            }
            ParamType::Str => !value.contains('\0'),
        }
    }

    /// The type's name as written in `.modinfo`.
    pub fn name(self) -> &'static str {
        match self {
            ParamType::Int => "int",
            ParamType::Uint => "uint",
            ParamType::Bool => "bool",
            ParamType::Str => "str",
        }
    }
}

/// A declared parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    /// Its name.
    pub name: String,
    /// Its type.
    pub ty: ParamType,
    /// One line for humans.
    pub description: String,
}

/// The parsed records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModInfo {
    /// Module name.
    pub name: String,
    /// Module version (free form).
    pub version: Option<String>,
    /// One line for humans.
    pub description: Option<String>,
    /// Author.
    pub author: Option<String>,
    /// License (SPDX expression).
    pub license: String,
    /// ABI the module was built against.
    pub abi: (u32, u32),
    /// Modules this one needs loaded first.
    pub depends: Vec<String>,
    /// Declared parameters, in order.
    pub params: Vec<ParamSpec>,
    /// Every record, in order, as `(key, value)` (unknown keys included).
    pub records: Vec<(String, String)>,
}

impl ModInfo {
    /// The declared parameter `name`.
    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }

    /// All values of `key`, in order (for `modinfo -F`).
    pub fn field<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.records
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a `.modinfo` section was rejected. Offsets are byte offsets into the section.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModinfoError {
    /// Larger than [`MAX_SECTION`].
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// More than [`MAX_RECORDS`] records.
    TooManyRecords,
    /// A record is not UTF-8.
    NotUtf8 {
        /// Where it starts.
        offset: usize,
    },
    /// A record has no `=`, or an empty or invalid key.
    BadRecord {
        /// Where it starts.
        offset: usize,
        /// The record (truncated to 80 bytes).
        record: String,
    },
    /// A key that may appear once appeared twice.
    Duplicate {
        /// The key.
        key: String,
    },
    /// A required key is missing.
    Missing {
        /// The key.
        key: &'static str,
    },
    /// `abi` is not `MAJOR.MINOR`.
    BadAbi {
        /// The value.
        value: String,
    },
    /// A `parm` record is not `name:type:description` with a known type.
    BadParam {
        /// The value.
        value: String,
    },
}

impl fmt::Display for ModinfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModinfoError::TooLarge { size } => {
                write!(f, ".modinfo is {size} bytes (at most {MAX_SECTION})")
            }
            ModinfoError::TooManyRecords => {
                write!(f, ".modinfo has more than {MAX_RECORDS} records")
            }
            ModinfoError::NotUtf8 { offset } => {
                write!(f, ".modinfo record at offset {offset} is not UTF-8")
            }
            ModinfoError::BadRecord { offset, record } => {
                write!(
                    f,
                    ".modinfo record at offset {offset} is not key=value: {record:?}"
                )
            }
            ModinfoError::Duplicate { key } => write!(f, ".modinfo has `{key}` twice"),
            ModinfoError::Missing { key } => write!(f, ".modinfo has no `{key}`"),
            ModinfoError::BadAbi { value } => {
                write!(f, ".modinfo abi `{value}` is not MAJOR.MINOR")
            }
            ModinfoError::BadParam { value } => write!(
                f,
                ".modinfo parm `{value}` is not name:type:description (types: int, uint, bool, str)"
            ),
        }
    }
}

impl std::error::Error for ModinfoError {}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 64
        && k.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Parse a `.modinfo` section. Empty records (padding NULs) are skipped.
pub fn parse(section: &[u8]) -> Result<ModInfo, ModinfoError> {
    if section.len() > MAX_SECTION {
        return Err(ModinfoError::TooLarge {
            size: section.len(),
        });
    }
    let mut info = ModInfo::default();
    let (mut name, mut abi, mut license) = (None, None, None);
    let mut offset = 0;
    for raw in section.split(|&b| b == 0) {
        let start = offset;
        offset += raw.len() + 1;
        if raw.is_empty() {
            continue;
        }
        if info.records.len() == MAX_RECORDS {
            return Err(ModinfoError::TooManyRecords);
        }
        let rec = std::str::from_utf8(raw).map_err(|_| ModinfoError::NotUtf8 { offset: start })?;
        let Some((k, v)) = rec.split_once('=').filter(|(k, _)| valid_key(k)) else {
            return Err(ModinfoError::BadRecord {
                offset: start,
                record: rec.chars().take(80).collect(),
            });
        };
        if k != "parm" && info.records.iter().any(|(seen, _)| seen == k) {
            return Err(ModinfoError::Duplicate { key: k.to_owned() });
        }
        match k {
            "name" => {
                if !valid_name(v) {
                    return Err(ModinfoError::BadRecord {
                        offset: start,
                        record: rec.chars().take(80).collect(),
                    });
                }
                name = Some(v.to_owned());
            }
            "abi" => {
                let parsed = v
                    .split_once('.')
                    .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
                abi = Some(parsed.ok_or_else(|| ModinfoError::BadAbi {
                    value: v.to_owned(),
                })?);
            }
            "license" => license = Some(v.to_owned()),
            "version" => info.version = Some(v.to_owned()),
            "description" => info.description = Some(v.to_owned()),
            "author" => info.author = Some(v.to_owned()),
            "depends" => {
                info.depends = v
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            "parm" => {
                let mut it = v.splitn(3, ':');
                let spec = match (it.next(), it.next().and_then(ParamType::parse), it.next()) {
                    (Some(n), Some(ty), d) if valid_key(n) => ParamSpec {
                        name: n.to_owned(),
                        ty,
                        description: d.unwrap_or("").to_owned(),
                    },
                    _ => {
                        return Err(ModinfoError::BadParam {
                            value: v.to_owned(),
                        })
                    }
                };
                if info.params.iter().any(|p| p.name == spec.name) {
                    return Err(ModinfoError::Duplicate {
                        key: format!("parm {}", spec.name),
                    });
                }
                info.params.push(spec);
            }
            _ => {}
        }
        info.records.push((k.to_owned(), v.to_owned()));
    }
    info.name = name.ok_or(ModinfoError::Missing { key: "name" })?;
    info.abi = abi.ok_or(ModinfoError::Missing { key: "abi" })?;
    info.license = license.ok_or(ModinfoError::Missing { key: "license" })?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &[u8] = b"name=demo\0version=1.2\0abi=1.0\0license=MIT\0depends=a, b\0\
        parm=count:uint:How many\0parm=label:str:A label\0\0\0";

    #[test]
    fn parses_records() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.name, "demo");
        assert_eq!(m.abi, (1, 0));
        assert_eq!(m.depends, ["a", "b"]);
        assert_eq!(m.params.len(), 2);
        assert_eq!(m.param("count").unwrap().ty, ParamType::Uint);
        assert!(ParamType::Uint.accepts("12") && !ParamType::Uint.accepts("-1"));
        assert_eq!(m.field("parm").count(), 2);
    }

    #[test]
    fn rejects_bad_sections() {
        assert_eq!(
            parse(b"version=1\0abi=1.0\0license=MIT\0"),
            Err(ModinfoError::Missing { key: "name" })
        );
        assert!(matches!(
            parse(b"name=a\0name=b\0"),
            Err(ModinfoError::Duplicate { .. })
        ));
        assert!(matches!(
            parse(b"garbage\0"),
            Err(ModinfoError::BadRecord { .. })
        ));
        assert!(matches!(
            parse(b"name=a\0abi=x\0"),
            Err(ModinfoError::BadAbi { .. })
        ));
        assert!(matches!(
            parse(b"\xff=1\0"),
            Err(ModinfoError::NotUtf8 { .. })
        ));
        assert!(matches!(
            parse(b"name=a\0abi=1.0\0license=MIT\0parm=x:float:no\0"),
            Err(ModinfoError::BadParam { .. })
        ));
        assert!(matches!(
            parse(&vec![b'a'; MAX_SECTION + 1]),
            Err(ModinfoError::TooLarge { .. })
        ));
    }

    #[test]
    fn never_panics_on_mutations() {
        // Every truncation and every single-byte change of a valid section parses or errs.
        for cut in 0..GOOD.len() {
            let _ = parse(&GOOD[..cut]);
        }
        for i in 0..GOOD.len() {
            for b in [0u8, b'=', b':', b',', 0xff, b'.'] {
                let mut m = GOOD.to_vec();
                m[i] = b;
                let _ = parse(&m);
            }
        }
    }
}
