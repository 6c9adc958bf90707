//! Printing configs the way upstream's `--defaultconfig` / `--minconfig` do.
//!
//! Upstream marshals to JSON and converts to YAML with sigs.k8s.io/yaml
//! (go-yaml v2). We mirror its output rather than use serde_yaml's because
//! the two differ visibly: go-yaml sorts keys with its own "natural" order
//! and double-quotes strings that would otherwise read as another type
//! (`""`, `"0"`), where serde_yaml single-quotes them. Users diff these files
//! against upstream's, so byte equality is worth a small emitter.

use std::cmp::Ordering;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::cloudcore::CloudCoreConfig;
use crate::edgecore::EdgeCoreConfig;
use crate::host::HostInfo;

const DEFAULT_HEADER: &str = "\
# With --defaultconfig flag, users can easily get a default full config file as reference, with all fields (and field descriptions) included and default values set. 
# Users can modify/create their own configs accordingly as reference. 
# Because it is a full configuration, it is more suitable for advanced users.
";

const MIN_HEADER: &str = "\
# With --minconfig , you can easily used this configurations as reference.
# It's useful to users who are new to KubeEdge, and you can modify/create your own configs accordingly. 
# This configuration is suitable for beginners.
";

/// Keys (dotted paths) upstream's `NewMinCloudCoreConfig` sets.
const CLOUDCORE_MIN_KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "modules.cloudHub.advertiseAddress",
    "modules.cloudHub.https",
    "modules.cloudHub.nodeLimit",
    "modules.cloudHub.tlsCAFile",
    "modules.cloudHub.tlsCAKeyFile",
    "modules.cloudHub.tlsCertFile",
    "modules.cloudHub.tlsPrivateKeyFile",
    "modules.cloudHub.unixsocket",
    "modules.cloudHub.websocket",
    "modules.iptablesManager",
    "modules.router",
];

/// Keys upstream's `NewMinEdgeCoreConfig` sets.
const EDGECORE_MIN_KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "edgecoreVersion",
    "database.dataSource",
    "modules.deviceTwin.dmiSockPath",
    "modules.edged",
    "modules.edgeHub.heartbeat",
    "modules.edgeHub.httpServer",
    "modules.edgeHub.tlsCaFile",
    "modules.edgeHub.tlsCertFile",
    "modules.edgeHub.tlsPrivateKeyFile",
    "modules.edgeHub.token",
    "modules.edgeHub.websocket",
    "modules.eventBus.mqttMode",
    "modules.eventBus.mqttPassword",
    "modules.eventBus.mqttPubClientID",
    "modules.eventBus.mqttQOS",
    "modules.eventBus.mqttRetain",
    "modules.eventBus.mqttServerExternal",
    "modules.eventBus.mqttServerInternal",
    "modules.eventBus.mqttSubClientID",
    "modules.eventBus.mqttUsername",
];

/// `cloudcore --defaultconfig`.
pub fn render_default_cloudcore(host: &HostInfo) -> String {
    render_document(
        DEFAULT_HEADER,
        &to_value(&CloudCoreConfig::default_for(host)),
    )
}

/// `cloudcore --minconfig`.
pub fn render_min_cloudcore(host: &HostInfo) -> String {
    let full = to_value(&CloudCoreConfig::default_for(host));
    let mut min = pick(&full, CLOUDCORE_MIN_KEYS);
    // Upstream's minimal constructor leaves `enable` at Go's zero value and
    // sets its own nodeLimit; loading this file therefore disables cloudHub.
    // Reproduced as-is: this output is upstream's, not a recommendation.
    set(&mut min, "modules.cloudHub.enable", Value::Bool(false));
    set(&mut min, "modules.cloudHub.nodeLimit", Value::from(1000));
    render_document(MIN_HEADER, &min)
}

/// `edgecore --defaultconfig`.
pub fn render_default_edgecore(host: &HostInfo) -> String {
    render_document(
        DEFAULT_HEADER,
        &to_value(&EdgeCoreConfig::default_for(host)),
    )
}

/// `edgecore --minconfig`.
pub fn render_min_edgecore(host: &HostInfo) -> String {
    let full = to_value(&EdgeCoreConfig::default_for(host));
    let mut min = pick(&full, EDGECORE_MIN_KEYS);
    // Same zero-value `enable` quirk as cloudcore's minimal config.
    for module in ["deviceTwin", "edgeHub", "eventBus"] {
        set(
            &mut min,
            &format!("modules.{module}.enable"),
            Value::Bool(false),
        );
    }
    render_document(MIN_HEADER, &min)
}

/// Any config as YAML in upstream's style (sorted keys, go-yaml quoting),
/// without a header. Useful for writing a config back to disk.
pub fn to_yaml<T: Serialize>(config: &T) -> String {
    let mut out = String::new();
    emit_node(&mut out, &to_value(config), 0);
    out
}

fn to_value<T: Serialize>(config: &T) -> Value {
    // Our config types contain only strings, numbers, bools, string-keyed
    // maps and sequences, which always serialize; Null is unreachable.
    serde_json::to_value(config).unwrap_or(Value::Null)
}

fn render_document(header: &str, value: &Value) -> String {
    let mut out = String::with_capacity(8192);
    out.push_str(header);
    out.push('\n');
    emit_node(&mut out, value, 0);
    // Upstream prints the document with Println after a trailing newline.
    out.push_str("\n\n");
    out
}

fn pick(full: &Value, keys: &[&str]) -> Value {
    let mut out = Value::Object(Map::new());
    for key in keys {
        let mut src = full;
        let mut found = true;
        for seg in key.split('.') {
            match src.get(seg) {
                Some(v) => src = v,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if found {
            set(&mut out, key, src.clone());
        }
    }
    out
}

fn set(root: &mut Value, dotted: &str, value: Value) {
    let mut cur = root;
    let mut segs = dotted.split('.').peekable();
    while let Some(seg) = segs.next() {
        let Value::Object(map) = cur else { return };
        if segs.peek().is_none() {
            map.insert(seg.to_owned(), value);
            return;
        }
        cur = map
            .entry(seg.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

/// go-yaml v2's map key order: runs of digits compare numerically, a letter
/// sorts after a non-letter, otherwise code points compare.
pub(crate) fn go_yaml_key_cmp(a: &str, b: &str) -> Ordering {
    let ar: Vec<char> = a.chars().collect();
    let br: Vec<char> = b.chars().collect();
    let mut i = 0;
    while i < ar.len() && i < br.len() {
        if ar[i] == br[i] {
            i += 1;
            continue;
        }
        let al = ar[i].is_alphabetic();
        let bl = br[i].is_alphabetic();
        if al && bl {
            return ar[i].cmp(&br[i]);
        }
        if al || bl {
            return if bl {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        // Both non-letters: compare the digit runs starting here numerically.
        let mut an: u128 = 0;
        let mut bn: u128 = 0;
        if ar[i] == '0' || br[i] == '0' {
            let mut j = i;
            while j > 0 && ar[j - 1].is_ascii_digit() {
                j -= 1;
                if ar[j] != '0' {
                    an = 1;
                    bn = 1;
                    break;
                }
            }
        }
        let mut ai = i;
        while ai < ar.len() && ar[ai].is_ascii_digit() {
            an = an
                .saturating_mul(10)
                .saturating_add(u128::from(ar[ai] as u32 - '0' as u32));
            ai += 1;
        }
        let mut bi = i;
        while bi < br.len() && br[bi].is_ascii_digit() {
            bn = bn
                .saturating_mul(10)
                .saturating_add(u128::from(br[bi] as u32 - '0' as u32));
            bi += 1;
        }
        if an != bn {
            return an.cmp(&bn);
        }
        if ai != bi {
            return ai.cmp(&bi);
        }
        return ar[i].cmp(&br[i]);
    }
    ar.len().cmp(&br.len())
}

fn sorted_entries(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|(a, _), (b, _)| go_yaml_key_cmp(a, b));
    entries
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// Writes `value` as a block node whose lines start at column `col`.
/// The caller has already positioned the cursor for the first line.
fn emit_node(out: &mut String, value: &Value, col: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (n, (key, child)) in sorted_entries(map).into_iter().enumerate() {
                if n > 0 {
                    indent(out, col);
                }
                out.push_str(&scalar_str(key));
                out.push(':');
                emit_child(out, child, col, true);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    indent(out, col);
                }
                out.push('-');
                emit_child(out, item, col, false);
            }
        }
        other => {
            out.push_str(&inline_scalar(other));
            out.push('\n');
        }
    }
}

/// After `key:` or `-`: nested collections go on following lines (go-yaml
/// does not indent a sequence under a mapping key), or inline after "- ".
fn emit_child(out: &mut String, child: &Value, col: usize, under_key: bool) {
    match child {
        Value::Object(m) if !m.is_empty() => {
            if under_key {
                out.push('\n');
                indent(out, col + 2);
            } else {
                out.push(' ');
            }
            emit_node(out, child, col + 2);
        }
        Value::Array(a) if !a.is_empty() => {
            if under_key {
                out.push('\n');
                indent(out, col);
                emit_node(out, child, col);
            } else {
                out.push(' ');
                emit_node(out, child, col + 2);
            }
        }
        _ => {
            out.push(' ');
            emit_node(out, child, col);
        }
    }
}

fn inline_scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => go_float(f),
            _ => n.to_string(),
        },
        Value::String(s) => scalar_str(s),
        Value::Object(_) => "{}".to_owned(),
        Value::Array(_) => "[]".to_owned(),
    }
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 64)`, which go-yaml uses: shortest
/// digits, exponent form when the exponent is below -4 or at least 6.
fn go_float(f: f64) -> String {
    if f.is_nan() {
        return ".nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            ".inf".into()
        } else {
            "-.inf".into()
        };
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
    } else {
        format!("{f}")
    }
}

/// A string scalar, quoted only when go-yaml would quote it.
fn scalar_str(s: &str) -> String {
    if s.contains('\n') || !s.chars().all(|c| c == '\t' || !c.is_control()) {
        // go-yaml would use a literal block; a JSON string is valid YAML and
        // keeps this emitter single-line.
        return serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
    }
    if resolves_to_non_string(s) {
        return format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    }
    if plain_allowed(s) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// YAML 1.1 scalars that a plain `s` would be read back as (go-yaml v2
/// resolves these), so it must be quoted to stay a string.
fn resolves_to_non_string(s: &str) -> bool {
    const WORDS: &[&str] = &[
        "", "~", "null", "Null", "NULL", "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO",
        "true", "True", "TRUE", "false", "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF",
        ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF", ".nan",
        ".NaN", ".NAN", "<<",
    ];
    if WORDS.contains(&s) {
        return true;
    }
    let first = s.chars().next().unwrap_or(' ');
    if !(first.is_ascii_digit() || matches!(first, '-' | '+' | '.')) {
        return false;
    }
    let plain: String = s.chars().filter(|&c| c != '_').collect();
    let unsigned = plain.trim_start_matches(['-', '+']);
    let radix_int = |prefix: &str, radix: u32| {
        unsigned
            .strip_prefix(prefix)
            .is_some_and(|d| !d.is_empty() && u128::from_str_radix(d, radix).is_ok())
    };
    plain.parse::<i128>().is_ok()
        || (plain.parse::<f64>().is_ok() && !unsigned.starts_with(['i', 'I', 'n', 'N']))
        || radix_int("0x", 16)
        || radix_int("0b", 2)
        || radix_int("0o", 8)
        || is_base60(unsigned)
        || looks_like_timestamp(s)
}

/// YAML 1.1 sexagesimal numbers such as `1:20` or `190:20:30.15`.
fn is_base60(s: &str) -> bool {
    let mut parts = s.split(':');
    let Some(head) = parts.next() else {
        return false;
    };
    let rest: Vec<&str> = parts.collect();
    if rest.is_empty() || head.is_empty() || !head.chars().all(|c| c.is_ascii_digit()) {
        return false;
    }
    let last = rest.len() - 1;
    rest.iter().enumerate().all(|(i, p)| {
        let p = if i == last {
            p.split_once('.').map_or(*p, |(int, _)| int)
        } else {
            p
        };
        !p.is_empty() && p.len() <= 2 && p.chars().all(|c| c.is_ascii_digit())
    })
}

fn looks_like_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit)
}

/// libyaml's rule for when a block-context plain scalar is unambiguous.
fn plain_allowed(s: &str) -> bool {
    if s.starts_with("---") || s.starts_with("...") {
        return false;
    }
    if s.starts_with([' ', '\t']) || s.ends_with([' ', '\t']) {
        return false;
    }
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let next_blank = chars.get(i + 1).is_none_or(|n| *n == ' ' || *n == '\t');
        if i == 0 {
            match c {
                '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\'' | '"'
                | '%' | '@' | '`' => return false,
                '?' | ':' | '-' if next_blank => return false,
                _ => {}
            }
        } else {
            match c {
                ':' if next_blank => return false,
                '#' if chars[i - 1] == ' ' || chars[i - 1] == '\t' => return false,
                _ => {}
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_matches_go_yaml() {
        let mut keys = vec![
            "b",
            "a10",
            "a9",
            "B",
            "_x",
            "Ax",
            "certificate",
            "CreatePodWorks",
            "a.b",
            "ab",
        ];
        keys.sort_by(|a, b| go_yaml_key_cmp(a, b));
        assert_eq!(
            keys,
            vec![
                "_x",
                "Ax",
                "B",
                "CreatePodWorks",
                "a.b",
                "a9",
                "a10",
                "ab",
                "b",
                "certificate"
            ]
        );
    }

    #[test]
    fn quoting_matches_go_yaml() {
        let cases = [
            ("", "\"\""),
            ("0", "\"0\""),
            ("1.5", "\"1.5\""),
            ("true", "\"true\""),
            ("yes", "\"yes\""),
            ("null", "\"null\""),
            ("1:20", "\"1:20\""),
            ("2001-12-14", "\"2001-12-14\""),
            ("0x1F", "\"0x1F\""),
            ("10s", "10s"),
            ("5m0s", "5m0s"),
            ("15%", "15%"),
            ("127.0.0.1:9091", "127.0.0.1:9091"),
            (
                "unix:///var/lib/kubeedge/kubeedge.sock",
                "unix:///var/lib/kubeedge/kubeedge.sock",
            ),
            (
                "e632aba927ea4ac2b575ec1603d56f10",
                "e632aba927ea4ac2b575ec1603d56f10",
            ),
            ("a: b", "'a: b'"),
            ("- x", "'- x'"),
            ("*x", "'*x'"),
            ("x #y", "'x #y'"),
            (" x", "' x'"),
            ("it's: x", "'it''s: x'"),
            ("a\nb", "\"a\\nb\""),
            ("inf", "inf"),
            ("-foo", "-foo"),
        ];
        for (input, want) in cases {
            assert_eq!(scalar_str(input), want, "for {input:?}");
        }
    }

    #[test]
    fn floats_print_like_go() {
        assert_eq!(go_float(0.9), "0.9");
        assert_eq!(go_float(1.0), "1");
        assert_eq!(go_float(100000.0), "100000");
        assert_eq!(go_float(1e6), "1e+06");
        assert_eq!(go_float(1234567.0), "1.234567e+06");
        assert_eq!(go_float(0.0001), "0.0001");
        assert_eq!(go_float(0.00001), "1e-05");
    }

    #[test]
    fn nested_sequences_and_maps() {
        let v = serde_json::json!({
            "m": {"modes": [{"node": {"enable": true}, "x": 1}], "empty": {}, "none": []},
            "s": [[1, 2], "a"],
        });
        let mut out = String::new();
        emit_node(&mut out, &v, 0);
        assert_eq!(
            out,
            "m:\n  empty: {}\n  modes:\n  - node:\n      enable: true\n    x: 1\n  none: []\ns:\n- - 1\n  - 2\n- a\n"
        );
        let back: serde_json::Value = serde_yaml::from_str(&out).unwrap_or_default();
        assert_eq!(back, v);
    }
}
