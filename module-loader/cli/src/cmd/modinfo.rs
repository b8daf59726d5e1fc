//! `rcumod modinfo FILE…`: everything the pre-load inspection learns about a module file,
//! without running any of it — the `.modinfo` records (printed like kmod's `modinfo`, `parm`
//! lines as `name:description (type)`), then what the ELF itself says: needed libraries,
//! build id, TLS, pin risks and the undefined symbols. The inspection policy allows pinned
//! modules here so that their risks are shown rather than refused.

use crate::cli::ModinfoArgs;
use crate::output::Json;
use module_loader::inspect::{inspect_file, InspectPolicy, Inspection, PinRisk};
use std::io::Write;
use std::path::Path;

/// kmod's key column: `printf("%-16s%s\n", "key:", value)`.
const KEY_WIDTH: usize = 16;

/// Run `modinfo`; returns the exit status.
pub fn run(args: &ModinfoArgs) -> u8 {
    // Describe any module, as kmod's modinfo does: what would refuse it at load time (an ABI
    // mismatch, a disallowed library, unknown symbols, pin risks) is shown, not fatal.
    let policy = InspectPolicy {
        allow_pinned: true,
        report_only: true,
        ..InspectPolicy::default()
    };
    let mut status = 0;
    let stdout = std::io::stdout();
    for file in &args.files {
        let insp = match inspect_file(file, &policy) {
            Ok(i) => i,
            Err(e) => {
                eprintln!(
                    "rcumod: ERROR: could not read module {}: {e}",
                    file.display()
                );
                status = 1;
                continue;
            }
        };
        let filename = std::fs::canonicalize(file).unwrap_or_else(|_| file.clone());
        let mut out = stdout.lock();
        let text = if args.json {
            format!("{}\n", to_json(&filename, &insp))
        } else if let Some(field) = &args.field {
            fields(&filename, &insp)
                .into_iter()
                .filter(|(k, _)| k == field)
                .map(|(_, v)| format!("{v}\n"))
                .collect()
        } else {
            fields(&filename, &insp)
                .into_iter()
                .filter(|(k, _)| !HIDDEN.contains(&k.as_str()))
                .map(|(k, v)| format!("{:<KEY_WIDTH$}{v}\n", format!("{k}:")))
                .collect()
        };
        if out.write_all(text.as_bytes()).is_err() {
            return 1;
        }
    }
    status
}

/// Fields available to `-F` but left out of the default listing (there may be many).
const HIDDEN: &[&str] = &["undefined_symbol"];

fn parm_line(name: &str, ty: &str, description: &str) -> String {
    format!("{name}:{description} ({ty})")
}

fn pin_risk_text(r: &PinRisk) -> String {
    r.to_string()
}

/// Every field as (key, value), in display order; repeated keys give several values.
pub fn fields(filename: &Path, i: &Inspection) -> Vec<(String, String)> {
    let mut f: Vec<(String, String)> = vec![("filename".into(), filename.display().to_string())];
    let mi = &i.modinfo;
    for (k, v) in &mi.records {
        let v = if k == "parm" {
            match v.split_once(':').map(|(n, rest)| (n, rest.split_once(':'))) {
                Some((n, Some((ty, desc)))) => parm_line(n, ty, desc),
                _ => v.clone(),
            }
        } else {
            v.clone()
        };
        f.push((k.clone(), v));
    }
    if let Some(b) = &i.build_id {
        f.push(("build_id".into(), b.clone()));
    }
    f.push(("size".into(), i.size.to_string()));
    f.push(("machine".into(), i.machine.clone()));
    if let Some(s) = &i.soname {
        f.push(("soname".into(), s.clone()));
    }
    for n in &i.needed {
        f.push(("needed".into(), n.clone()));
    }
    f.push(("tls".into(), if i.has_tls { "yes" } else { "no" }.into()));
    if i.pin_risks.is_empty() {
        f.push(("pin_risk".into(), "none".into()));
    }
    for r in &i.pin_risks {
        f.push(("pin_risk".into(), pin_risk_text(r)));
    }
    // What unloading may pin: what module code can hand libc for later.
    for h in &i.handoffs {
        f.push(("warning".into(), h.to_string()));
    }
    f.push(("undefined".into(), i.undefined.len().to_string()));
    for s in &i.undefined {
        f.push(("undefined_symbol".into(), s.clone()));
    }
    for sp in &i.search_paths {
        f.push(("search_path".into(), sp.clone()));
    }
    for line in i.problems.iter().flat_map(|p| p.lines()) {
        f.push(("problem".into(), line.to_owned()));
    }
    f
}

/// The inspection as one JSON object.
pub fn to_json(filename: &Path, i: &Inspection) -> Json {
    let mi = &i.modinfo;
    let params: Vec<Json> = mi
        .params
        .iter()
        .map(|p| {
            Json::obj()
                .with("name", p.name.as_str())
                .with("type", p.ty.name())
                .with("description", p.description.as_str())
        })
        .collect();
    let records: Vec<Json> = mi
        .records
        .iter()
        .map(|(k, v)| Json::Arr(vec![k.as_str().into(), v.as_str().into()]))
        .collect();
    let risks: Vec<Json> = i
        .pin_risks
        .iter()
        .map(|r| match r {
            PinRisk::NoDelete => Json::obj().with("kind", "nodelete"),
            PinRisk::GnuUnique { symbols } => Json::obj()
                .with("kind", "gnu_unique")
                .with("symbols", symbols.clone()),
        })
        .collect();
    Json::obj()
        .with("filename", filename.display().to_string())
        .with("name", mi.name.as_str())
        .with("version", mi.version.clone())
        .with("description", mi.description.clone())
        .with("author", mi.author.clone())
        .with("license", mi.license.as_str())
        .with("abi", format!("{}.{}", mi.abi.0, mi.abi.1))
        .with("depends", mi.depends.clone())
        .with("params", Json::Arr(params))
        .with("records", Json::Arr(records))
        .with("problems", i.problems.clone())
        .with("size", i.size)
        .with("machine", i.machine.as_str())
        .with("soname", i.soname.clone())
        .with("needed", i.needed.clone())
        .with("build_id", i.build_id.clone())
        .with("tls", i.has_tls)
        .with("pin_risks", Json::Arr(risks))
        .with(
            "handoffs",
            Json::Arr(
                i.handoffs
                    .iter()
                    .map(|h| {
                        Json::obj()
                            .with("symbol", h.symbol.as_str())
                            .with("kind", h.what.to_string())
                            .with("consequence", h.what.consequence())
                    })
                    .collect(),
            ),
        )
        .with("undefined_count", i.undefined.len())
        .with("undefined", i.undefined.clone())
}
