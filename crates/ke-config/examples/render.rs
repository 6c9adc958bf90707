//! Prints what `--defaultconfig` / `--minconfig` would for this host:
//! `cargo run -p ke-config --example render -- edgecore min`.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let host = match args.get(3) {
        Some(ip) => ke_config::HostInfo::new(
            "vm",
            ip.parse::<std::net::IpAddr>()
                .unwrap_or([127, 0, 0, 1].into()),
        ),
        None => ke_config::HostInfo::detect(),
    };
    let out = match (
        args.get(1).map(String::as_str),
        args.get(2).map(String::as_str),
    ) {
        (Some("cloudcore"), Some("min")) => ke_config::render_min_cloudcore(&host),
        (Some("cloudcore"), _) => ke_config::render_default_cloudcore(&host),
        (_, Some("min")) => ke_config::render_min_edgecore(&host),
        _ => ke_config::render_default_edgecore(&host),
    };
    print!("{out}");
}
