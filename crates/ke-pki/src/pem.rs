//! Minimal PEM armour, written the way Go's `encoding/pem` writes it so the
//! files we produce diff cleanly against upstream's (64-column base64 body,
//! trailing newline after the END line).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

pub(crate) const CERTIFICATE: &str = "CERTIFICATE";
pub(crate) const EC_PRIVATE_KEY: &str = "EC PRIVATE KEY";
pub(crate) const PRIVATE_KEY: &str = "PRIVATE KEY";

pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = String::with_capacity(body.len() + body.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    // base64 output is ASCII, so splitting at byte offsets is safe.
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// Why a PEM document could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PemProblem {
    /// No block with any of the wanted labels (the labels found are listed).
    NoBlock { found: Vec<String> },
    /// A block was found but is malformed.
    Malformed(String),
}

impl std::fmt::Display for PemProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PemProblem::NoBlock { found } if found.is_empty() => f.write_str("no pem block found"),
            PemProblem::NoBlock { found } => {
                write!(f, "no suitable pem block (found: {})", found.join(", "))
            }
            PemProblem::Malformed(reason) => write!(f, "malformed pem: {reason}"),
        }
    }
}

/// Returns the first block whose label is one of `wanted`, skipping others.
///
/// Skipping matters for keys made by `openssl ecparam -genkey`, which puts an
/// `EC PARAMETERS` block in front of the key.
pub(crate) fn decode_first(text: &str, wanted: &[&str]) -> Result<(String, Vec<u8>), PemProblem> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let Some(label_end) = after.find("-----") else {
            return Err(PemProblem::Malformed("unterminated begin line".into()));
        };
        let label = &after[..label_end];
        let body_start = &after[label_end + "-----".len()..];
        let end_marker = format!("-----END {label}-----");
        let Some(body_end) = body_start.find(&end_marker) else {
            return Err(PemProblem::Malformed(format!(
                "missing end line for {label}"
            )));
        };
        let body = &body_start[..body_end];
        rest = &body_start[body_end + end_marker.len()..];
        if !wanted.contains(&label) {
            found.push(label.to_string());
            continue;
        }
        if body.contains(':') {
            // RFC 1421 headers only appear on encrypted keys, which we cannot use.
            return Err(PemProblem::Malformed(format!(
                "{label} block has headers (encrypted pem is not supported)"
            )));
        }
        let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let der = STANDARD
            .decode(compact.as_bytes())
            .map_err(|e| PemProblem::Malformed(format!("bad base64 in {label} block: {e}")))?;
        if der.is_empty() {
            return Err(PemProblem::Malformed(format!("empty {label} block")));
        }
        return Ok((label.to_string(), der));
    }
    Err(PemProblem::NoBlock { found })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_line_width() {
        let der: Vec<u8> = (0..=255u8).collect();
        let text = encode(CERTIFICATE, &der);
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(text.ends_with("-----END CERTIFICATE-----\n"));
        assert!(text.lines().all(|l| l.len() <= 64));
        let (label, back) = decode_first(&text, &[CERTIFICATE]).unwrap();
        assert_eq!(label, CERTIFICATE);
        assert_eq!(back, der);
    }

    #[test]
    fn skips_unwanted_blocks() {
        let text = format!(
            "{}{}",
            encode("EC PARAMETERS", &[6, 8, 42]),
            encode(EC_PRIVATE_KEY, &[1, 2, 3])
        );
        let (label, der) = decode_first(&text, &[EC_PRIVATE_KEY, PRIVATE_KEY]).unwrap();
        assert_eq!(label, EC_PRIVATE_KEY);
        assert_eq!(der, vec![1, 2, 3]);
        assert_eq!(
            decode_first(&encode("X", &[1]), &[CERTIFICATE]),
            Err(PemProblem::NoBlock {
                found: vec!["X".into()]
            })
        );
        assert!(matches!(
            decode_first("garbage", &[CERTIFICATE]),
            Err(PemProblem::NoBlock { .. })
        ));
    }
}
